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


def test_a_stock_build_does_not_call_the_series_own_symbols_lost(tmp_path):
    """l1.config enables CONFIG_VFIO_PLATFORM_NODMA, which only the series defines: a stock
    build is verified without it; any other lost symbol is still named."""
    frag = tmp_path / "l1.config"
    frag.write_text("CONFIG_VFIO_PLATFORM_NODMA=y\nCONFIG_VFIO=y\n")
    dot = tmp_path / ".config"
    dot.write_text("CONFIG_VFIO=y\n")
    shipped = tuple(sorted(kernel.PATCH_DIR.glob("*.patch")))
    exempt = kernel.kconfig_symbols(shipped) - kernel.kconfig_symbols(())
    assert exempt == {"CONFIG_VFIO_PLATFORM_NODMA"}
    kernel.verify_config(frag, dot, exempt)
    with pytest.raises(BuildError, match="CONFIG_VFIO_PLATFORM_NODMA=y"):
        kernel.verify_config(frag, dot)  # the patched build must have it
    dot.write_text("")
    with pytest.raises(BuildError, match=r"CONFIG_VFIO=y \(final .config: not set\)"):
        kernel.verify_config(frag, dot, exempt)
