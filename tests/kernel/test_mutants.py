"""ci/mutate's mutants stay in step with the series: each edit matches exactly once in the
files as the series leaves them, and the series plus the mutant patch applies and changes
what the mutant says (so a series edit cannot quietly turn a mutant into the original)."""

import subprocess

import pytest

from pytest_vfio_platform import mutate
from pytest_vfio_platform.images.cache import ArtifactCache
from pytest_vfio_platform.images.kernel import PATCH_DIR
from pytest_vfio_platform.images.source import DEBIAN_TARBALL, pristine_tree, source_digest

PATCHES = tuple(sorted(PATCH_DIR.glob("*.patch")))

pytestmark = pytest.mark.skipif(
    not DEBIAN_TARBALL.is_file(), reason="linux-source-6.12 not installed (ci/setup)"
)


@pytest.fixture(scope="module")
def after(tmp_path_factory):
    cache = ArtifactCache()
    pristine = pristine_tree(DEBIAN_TARBALL, source_digest(DEBIAN_TARBALL, cache), cache)
    return pristine, mutate.patched_files(PATCHES, pristine, tmp_path_factory.mktemp("m"))


def test_every_safety_condition_has_a_mutant():
    names = {m.name for m in mutate.MUTANTS}
    assert {f"dma-prop-{p.lstrip('#')}" for p in mutate.DMA_PROPS} <= names
    assert len(mutate.DMA_PROPS) == 10
    for need in (
        "allowlist",
        "fallback-compatible",
        "opt-in-amba",
        "opt-in-platform",
        "reset-skipped",
        "acpi",
    ):
        assert need in names
    assert len(names) == len(mutate.MUTANTS), "two mutants share a name"


@pytest.mark.parametrize("m", mutate.MUTANTS, ids=[m.name for m in mutate.MUTANTS])
def test_mutant_applies_on_top_of_the_series(after, m, tmp_path):
    pristine, files = after
    series = mutate.mutant_series(m, PATCHES, files, tmp_path / "series")
    tree = tmp_path / "tree"
    for rel in mutate.series_files(PATCHES):
        if (pristine / rel).is_file():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_bytes((pristine / rel).read_bytes())
    for p in sorted(series.glob("*.patch")):
        r = subprocess.run(
            ["patch", "-p1", "-s", "-d", str(tree), "-i", str(p)], capture_output=True, text=True
        )
        assert r.returncode == 0, f"{p.name}: {r.stdout}{r.stderr}"
    result = (tree / m.file).read_text()
    assert result != files[m.file]
    assert result == m.apply(files[m.file])


def test_a_stale_mutant_is_named():
    m = mutate.Mutant("stale", "x", mutate.NODMA, (("no such line", ""),))
    with pytest.raises(ValueError, match="mutant stale: .* 0 copies of 'no such line'"):
        m.apply("int a;\n")
