"""A first build on an empty cache: every directory the builder writes to is its own to make."""

from pathlib import Path

import pytest

from pytest_vfio_platform.errors import BuildError
from pytest_vfio_platform.images import kernel
from pytest_vfio_platform.images.cache import ArtifactCache


def test_patch_failure_on_an_empty_cache_names_the_patch_and_keeps_the_log(tmp_path, monkeypatch):
    src = tmp_path / "linux"
    (src / "arch/arm64").mkdir(parents=True)
    (src / "Makefile").write_text("VERSION = 6\n")
    (src / "f.c").write_text("a\n")
    bad = tmp_path / "0001-bad.patch"
    bad.write_text("--- a/f.c\n+++ b/f.c\n@@ -1 +1 @@\n-zzz\n+b\n")
    monkeypatch.setattr(kernel, "toolchain_id", lambda: "gcc-test")
    cache = ArtifactCache(tmp_path / "fresh-cache")  # does not exist yet
    spec = kernel.KernelSpec(variant="patched", source=src, patches=(bad,))
    with pytest.raises(BuildError) as e:
        kernel.build_kernel(spec, cache, progress=lambda m: None)
    assert "0001-bad.patch does not apply" in str(e.value)
    log = Path(e.value.log)
    assert log.is_file() and "0001-bad.patch" in log.read_text()
    assert cache.lookup("kernel", "x") is None and not list(
        (cache.root / "artifacts" / "kernel").glob("*")
    )
