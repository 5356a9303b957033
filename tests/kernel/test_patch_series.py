"""The patch series is upstream-shaped: it applies in order to the default 6.12 source, every
patch is `checkpatch.pl --strict` clean, and each says why (a commit message, a sign-off)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_vfio_platform.images.cache import ArtifactCache
from pytest_vfio_platform.images.kernel import PATCH_DIR
from pytest_vfio_platform.images.source import DEBIAN_TARBALL, pristine_tree, source_digest

PATCHES = sorted(PATCH_DIR.glob("*.patch"))

pytestmark = pytest.mark.skipif(
    not DEBIAN_TARBALL.is_file(), reason="linux-source-6.12 not installed (ci/setup)"
)


@pytest.fixture(scope="module")
def pristine() -> Path:
    cache = ArtifactCache()
    return pristine_tree(DEBIAN_TARBALL, source_digest(DEBIAN_TARBALL, cache), cache)


def test_series_exists_and_is_format_patch():
    assert PATCHES, "kernel/patches/ is empty: the change under test is missing"
    for p in PATCHES:
        text = p.read_text()
        assert re.match(r"From [0-9a-f]{40} ", text), f"{p.name}: not git format-patch output"
        assert "Signed-off-by: " in text, f"{p.name}: no Signed-off-by"
        body = text.split("\n\n", 1)[1].split("\n---\n", 1)[0]
        assert len(body.split()) > 20, f"{p.name}: the commit message does not explain why"


def test_series_applies_in_order(pristine, tmp_path):
    tree = tmp_path / "vfio"
    shutil.copytree(pristine / "drivers/vfio", tree / "drivers/vfio")
    for p in PATCHES:
        r = subprocess.run(
            ["patch", "-p1", "--dry-run", "-s", "-d", str(tree), "-i", str(p)],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, f"{p.name} does not apply: {r.stdout}{r.stderr}"
        subprocess.run(["patch", "-p1", "-s", "-d", str(tree), "-i", str(p)], check=True)


@pytest.mark.parametrize("patch", PATCHES, ids=[p.name[:4] for p in PATCHES])
def test_checkpatch_strict_clean(pristine, patch):
    r = subprocess.run(
        [
            "perl",
            str(pristine / "scripts/checkpatch.pl"),
            "--strict",
            str(patch),
        ],
        capture_output=True,
        text=True,
        cwd=pristine,
    )
    assert r.returncode == 0 and "total: 0 errors, 0 warnings, 0 checks" in r.stdout, (
        r.stdout + r.stderr
    )
