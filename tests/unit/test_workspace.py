"""The build workspace: after prepare() it holds exactly pristine + series, and make sees a
new mtime on every file whose bytes changed and on no other."""

import os
import subprocess
from pathlib import Path

from pytest_vfio_platform.images.cache import ArtifactCache
from pytest_vfio_platform.images.kernel import apply_patches
from pytest_vfio_platform.images.source import tree_manifest
from pytest_vfio_platform.images.workspace import RECORD, prepare


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def _patch(tmp: Path, name: str, base: Path, edits: dict[str, str | None]) -> Path:
    """A real unified diff (git diff --no-index) from base to base+edits."""
    a, b = tmp / f"{name}-a", tmp / f"{name}-b"
    subprocess.run(["cp", "-a", str(base), str(a)], check=True)
    subprocess.run(["cp", "-a", str(base), str(b)], check=True)
    for rel, text in edits.items():
        p = b / rel
        if text is None:
            p.unlink()
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
    out = subprocess.run(
        ["git", "diff", "--no-index", "--no-prefix", f"{name}-a", f"{name}-b"],
        cwd=tmp,
        capture_output=True,
        text=True,
    ).stdout
    # paths as a kernel patch has them: a/<rel> and b/<rel>
    out = out.replace(f"{name}-a/", "a/").replace(f"{name}-b/", "b/")
    p = tmp / f"{name}.patch"
    p.write_text(out)
    return p


def _content(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != RECORD and "_build" not in p.parts
    }


def _mtimes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and p.name != RECORD
    }


def _prepare(cache, pristine, tree, patches, log):
    return prepare(
        pristine,
        tree_manifest(pristine, cache),
        tree,
        lambda t: apply_patches(t, tuple(patches), log),
        log,
        keep="_build",
    )


def _age(root: Path) -> None:
    """Every file an hour old, as after a build long ago, so a new mtime is visible."""
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, (1_000_000, 1_000_000))


def test_switching_series_rewrites_only_what_differs(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    pristine = _tree(
        tmp_path / "src", {"a.c": "int a;\n", "b.c": "int b;\n", "Kconfig": "config X\n"}
    )
    p1 = _patch(tmp_path, "one", pristine, {"a.c": "int a = 1;\n", "new.c": "int n;\n"})
    p2 = _patch(tmp_path, "two", pristine, {"a.c": "int a = 1;\n", "b.c": "int b = 2;\n"})
    tree, log = tmp_path / "ws", tmp_path / "log"

    assert _prepare(cache, pristine, tree, [p1], log) == -1  # no record: full sync
    assert _content(tree) == {
        "Kconfig": "config X\n",
        "a.c": "int a = 1;\n",
        "b.c": "int b;\n",
        "new.c": "int n;\n",
    }
    (tree / "_build").mkdir()
    (tree / "_build" / "a.o").write_text("object")
    _age(tree)

    n = _prepare(cache, pristine, tree, [p2], log)
    assert n == 2  # the files the last series touched, nothing walked by rsync
    assert _content(tree) == {"Kconfig": "config X\n", "a.c": "int a = 1;\n", "b.c": "int b = 2;\n"}
    m = _mtimes(tree)
    assert m["a.c"] == 1_000_000_000_000_000  # same bytes under both series: make skips it
    assert m["Kconfig"] == 1_000_000_000_000_000
    assert m["b.c"] > 1_000_000_000_000_000  # changed: make rebuilds it
    assert (tree / "_build" / "a.o").read_text() == "object"  # the build dir is kept

    _age(tree)
    _prepare(cache, pristine, tree, [], log)  # back to stock
    assert _content(tree) == {"Kconfig": "config X\n", "a.c": "int a;\n", "b.c": "int b;\n"}
    m = _mtimes(tree)
    assert m["a.c"] > 1_000_000_000_000_000 and m["b.c"] > 1_000_000_000_000_000


def test_an_edited_source_tree_syncs_the_edit(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    pristine = _tree(tmp_path / "src", {"a.c": "int a;\n", "gone.c": "x\n"})
    tree, log = tmp_path / "ws", tmp_path / "log"
    _prepare(cache, pristine, tree, [], log)
    _age(tree)
    (pristine / "a.c").write_text("int a; /* edit */\n")
    (pristine / "gone.c").unlink()
    (pristine / "sub").mkdir()
    (pristine / "sub" / "added.c").write_text("y\n")
    (pristine / "sub" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(pristine / "sub" / "run.sh", 0o755)
    assert _prepare(cache, pristine, tree, [], log) == 4
    assert _content(tree) == _content(pristine)
    assert os.stat(tree / "sub" / "run.sh").st_mode & 0o111  # executable bits follow


def test_a_build_killed_mid_prepare_is_synced_in_full(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    pristine = _tree(tmp_path / "src", {"a.c": "int a;\n"})
    tree, log = tmp_path / "ws", tmp_path / "log"
    _prepare(cache, pristine, tree, [], log)

    def dies(t: Path) -> list[str]:
        (t / "a.c").write_text("half-patched\n")
        raise KeyboardInterrupt

    try:
        prepare(pristine, tree_manifest(pristine, cache), tree, dies, log, keep="_build")
    except KeyboardInterrupt:
        pass
    assert not (tree / RECORD).exists()  # no record: the tree is not trusted
    _age(tree)  # as if the full sync had been killed after rsync wrote pristine's mtimes
    assert _prepare(cache, pristine, tree, [], log) == -1
    assert _content(tree) == {"a.c": "int a;\n"}
    assert _mtimes(tree)["a.c"] > 1_000_000_000_000_000  # rewritten now: make rebuilds it


def test_uapi_key_ignores_a_driver_edit_but_not_a_uapi_edit():
    from pytest_vfio_platform.images.kernel import uapi_inputs_digest

    base = {"Makefile": "m:0", "include/uapi/linux/vfio.h": "v:0", "drivers/x.c": "x:0"}
    d0 = uapi_inputs_digest(base)
    assert uapi_inputs_digest({**base, "drivers/x.c": "x2:0"}) == d0
    assert uapi_inputs_digest({**base, "include/uapi/linux/vfio.h": "v2:0"}) != d0
    assert uapi_inputs_digest({**base, "scripts/headers_install.sh": "s:73"}) != d0


def test_renames_copies_and_symlinks_a_series_makes_are_reverted_next_time():
    from pytest_vfio_platform.images.kernel import _touched

    out = (
        "patching file drivers/a.c\n"
        "patching file drivers/new.c (renamed from drivers/old.c)\n"
        "patching file 'drivers/b c.c' (copied from drivers/b.c)\n"
        "patching symbolic link include/link.h\n"
        "Hunk #1 succeeded at 3.\n"
    )
    assert _touched(out) == [
        "drivers/a.c",
        "drivers/new.c",
        "drivers/old.c",
        "drivers/b c.c",
        "drivers/b.c",
        "include/link.h",
    ]


def test_a_plain_diff_kconfig_hunk_reconfigures():
    from pytest_vfio_platform.images.kernel import kconfig_digest, source_kconfig_digest

    def digest(tmp, text):
        p = tmp / "x.patch"
        p.write_text(text)
        return kconfig_digest((p,))

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        from pathlib import Path as P

        t = P(d)
        plain = "--- a/drivers/Kconfig\n+++ b/drivers/Kconfig\n@@ -1 +1,2 @@\n x\n+config Y\n"
        c_only = "--- a/drivers/x.c\n+++ b/drivers/x.c\n@@ -1 +1 @@\n-a\n+b\n"
        assert digest(t, plain) != digest(t, c_only) == kconfig_digest(())
    base = {"drivers/Kconfig": "k:0", "drivers/x.c": "c:0"}
    assert source_kconfig_digest({**base, "drivers/x.c": "c2:0"}) == source_kconfig_digest(base)
    assert source_kconfig_digest({**base, "drivers/Kconfig": "k2:0"}) != source_kconfig_digest(base)
