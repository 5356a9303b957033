"""Cache keys: every input that shapes the Image changes the key; nothing else does."""

from pathlib import Path

import pytest

from pytest_vfio_platform.errors import BuildError, SetupError
from pytest_vfio_platform.images.cache import ArtifactCache
from pytest_vfio_platform.images.kernel import (
    KernelSpec,
    apply_patches,
    check_arm64_image,
    kernel_key,
    parse_fragment,
    verify_config,
)
from pytest_vfio_platform.images.source import source_digest


@pytest.fixture
def inputs(tmp_path: Path):
    frag = tmp_path / "l1.config"
    frag.write_text("CONFIG_VFIO=y\n# CONFIG_DEBUG_INFO is not set\n")
    pdir = tmp_path / "patches"
    pdir.mkdir()
    (pdir / "0001-a.patch").write_text("patch one\n")
    (pdir / "0002-b.patch").write_text("patch two\n")
    return frag, pdir


def key(frag, pdir, src="src0", tc="gcc 12", variant="patched"):
    spec = KernelSpec(variant=variant, fragment=frag, patches=tuple(sorted(pdir.glob("*.patch"))))
    return kernel_key(spec, src, tc).hexdigest()


def test_same_inputs_same_key(inputs):
    assert key(*inputs) == key(*inputs)


def test_patch_change_invalidates(inputs):
    frag, pdir = inputs
    before = key(frag, pdir)
    (pdir / "0002-b.patch").write_text("patch two, one line changed\n")
    assert key(frag, pdir) != before


def test_patch_added_or_renamed_invalidates(inputs):
    frag, pdir = inputs
    before = key(frag, pdir)
    (pdir / "0002-b.patch").rename(pdir / "0003-b.patch")
    renamed = key(frag, pdir)
    (pdir / "0004-c.patch").write_text("new\n")
    assert len({before, renamed, key(frag, pdir)}) == 3


def test_fragment_change_invalidates(inputs):
    frag, pdir = inputs
    before = key(frag, pdir)
    frag.write_text(frag.read_text() + "CONFIG_KVM=y\n")
    assert key(frag, pdir) != before


def test_source_and_toolchain_and_variant_invalidate(inputs):
    base = key(*inputs)
    assert key(*inputs, src="src1") != base
    assert key(*inputs, tc="gcc 13") != base
    assert key(*inputs, variant="stock") != base


def test_unrelated_file_does_not_invalidate(inputs):
    frag, pdir = inputs
    before = key(frag, pdir)
    (pdir / "README.md").write_text("notes about the series\n")
    (frag.parent / "unrelated.txt").write_text("x\n")
    assert key(frag, pdir) == before


def test_stock_variant_has_no_patches():
    assert KernelSpec(variant="stock").patch_list() == ()
    with pytest.raises(SetupError, match="unknown kernel variant"):
        KernelSpec(variant="nope").patch_list()


def _tree(root: Path) -> Path:
    (root / "arch/arm64").mkdir(parents=True)
    (root / "Makefile").write_text("VERSION = 6\n")
    (root / "drivers").mkdir()
    (root / "drivers/a.c").write_text("int a;\n")
    return root


def test_source_tree_digest_tracks_content_not_mtime(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    src = _tree(tmp_path / "linux")
    d0 = source_digest(src, cache)
    (src / "drivers/a.c").touch()  # same content, new mtime
    assert source_digest(src, cache) == d0
    (src / "drivers/a.c").write_text("int a = 1;\n")
    d1 = source_digest(src, cache)
    assert d1 != d0
    (src / ".git").mkdir()
    (src / ".git/HEAD").write_text("ref\n")  # git metadata is not source
    assert source_digest(src, cache) == d1


def test_not_a_kernel_tree_is_a_clear_error(tmp_path):
    with pytest.raises(SetupError, match="not a Linux source tree"):
        source_digest(tmp_path, ArtifactCache(tmp_path / "c"))


def test_parse_fragment_rejects_junk(tmp_path):
    f = tmp_path / "x.config"
    f.write_text("CONFIG_A=y\nthis is junk\n")
    with pytest.raises(SetupError, match=r"x.config:2: not a Kconfig assignment"):
        parse_fragment(f)


def test_verify_config_names_lost_symbols(tmp_path):
    frag = tmp_path / "l1.config"
    frag.write_text("CONFIG_VFIO=y\nCONFIG_KVM=y\nCONFIG_NR_CPUS=4\n# CONFIG_X is not set\n")
    dot = tmp_path / ".config"
    dot.write_text("CONFIG_VFIO=y\n# CONFIG_KVM is not set\nCONFIG_NR_CPUS=8\n")
    with pytest.raises(BuildError) as e:
        verify_config(frag, dot)
    msg = str(e.value)
    assert "CONFIG_KVM=y (final .config: not set)" in msg
    assert "CONFIG_NR_CPUS=4 (final .config: 8)" in msg
    assert "CONFIG_VFIO" not in msg.split("lost in the merge")[1]
    dot.write_text("CONFIG_VFIO=y\nCONFIG_KVM=y\nCONFIG_NR_CPUS=4\n")
    verify_config(frag, dot)


def test_patch_that_does_not_apply_names_patch_file_and_hunk(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f.c").write_text("one\ntwo\nthree\n")
    p = tmp_path / "0001-change.patch"
    p.write_text("--- a/f.c\n+++ b/f.c\n@@ -1,3 +1,3 @@\n one\n-TWO-NOT-THERE\n+2\n three\n")
    with pytest.raises(BuildError) as e:
        apply_patches(tree, (p,), tmp_path / "log")
    assert "0001-change.patch" in str(e.value)
    assert "f.c: hunk #1" in str(e.value)
    assert (tree / "f.c").read_text() == "one\ntwo\nthree\n"  # dry-run: nothing half-applied


def test_patch_applies(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f.c").write_text("one\ntwo\nthree\n")
    p = tmp_path / "0001-change.patch"
    p.write_text("--- a/f.c\n+++ b/f.c\n@@ -1,3 +1,3 @@\n one\n-two\n+2\n three\n")
    assert apply_patches(tree, (p,), tmp_path / "log") == ["f.c"]
    assert (tree / "f.c").read_text() == "one\n2\nthree\n"


def test_prebuilt_kernel_must_be_arm64_image(tmp_path):
    bad = tmp_path / "vmlinux"
    bad.write_bytes(b"\x7fELF" + b"\0" * 100)
    with pytest.raises(SetupError, match="not an arm64 kernel Image"):
        check_arm64_image(bad)
    with pytest.raises(SetupError, match="no such file"):
        check_arm64_image(tmp_path / "missing")
    good = tmp_path / "Image"
    good.write_bytes(b"\0" * 56 + b"ARM\x64" + b"\0" * 8)
    check_arm64_image(good)
