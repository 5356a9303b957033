"""The artifact cache never publishes a half-built entry. An unwritable cache and a full disk
are cases of the fault suite (tests/faults/test_bad_input.py), at every step of publishing."""

import pytest

from pytest_vfio_platform.images.cache import ArtifactCache


def test_build_once_then_hit(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls = []

    def build(out):
        calls.append(out)
        (out / "Image").write_bytes(b"img")
        return {"release": "6.12"}

    a = cache.get_or_build("kernel", "k1", build)
    b = cache.get_or_build("kernel", "k1", build)
    assert a == b and len(calls) == 1
    assert (a / "Image").read_bytes() == b"img"


def test_failed_build_leaves_nothing(tmp_path):
    cache = ArtifactCache(tmp_path)

    def build(out):
        (out / "Image").write_bytes(b"half")
        raise RuntimeError("compiler died")

    with pytest.raises(RuntimeError):
        cache.get_or_build("kernel", "k2", build)
    assert cache.lookup("kernel", "k2") is None
    assert not any((tmp_path / "artifacts" / "kernel").iterdir())


def test_interrupted_build_is_not_reused(tmp_path):
    cache = ArtifactCache(tmp_path)

    def build(out):
        (out / "Image").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_build("kernel", "k3", build)
    assert cache.lookup("kernel", "k3") is None
    # an entry directory without a manifest (killed mid-rename on another fs) is ignored too
    (cache.path("kernel", "k4")).mkdir(parents=True)
    assert cache.lookup("kernel", "k4") is None
    built = cache.get_or_build(
        "kernel", "k4", lambda out: (out / "Image").write_bytes(b"ok") and {}
    )
    assert (built / "Image").read_bytes() == b"ok"
