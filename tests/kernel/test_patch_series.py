"""The patch series is upstream-shaped: it applies in order to the default 6.12 source, every
patch is `checkpatch.pl --strict` clean, and each says why (a commit message, a sign-off)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_vfio_platform import series
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
    shutil.copy(pristine / "MAINTAINERS", tree / "MAINTAINERS")
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


def test_series_is_shaped_as_upstream_writes_it():
    """Subjects `vfio/platform: Add ...`, messages wrapped, signed off by the author, the
    RFC thread linked (pytest_vfio_platform.series)."""
    assert series.problems([series.Patch.read(p) for p in PATCHES]) == []


def test_posting_check_refuses_the_placeholder_and_says_how_to_resign(capsys):
    assert series.main(["--posting"]) == 1
    out = capsys.readouterr().out
    assert f"signed with the placeholder identity {series.PLACEHOLDER}" in out
    assert "re-sign it as yourself" in out and "git format-patch -v2" in out


def test_a_resigned_series_is_ready_to_post(tmp_path, capsys):
    for p in PATCHES:
        (tmp_path / p.name).write_text(
            p.read_text().replace("pytest-vfio-platform <" + series.PLACEHOLDER + ">",
                                  "Jane Doe <jane@example.org>")
        )  # fmt: skip
    assert series.main(["--posting", str(tmp_path)]) == 0, capsys.readouterr().out


def test_series_check_refuses_a_lower_case_summary_and_a_missing_link(tmp_path):
    p = PATCHES[0].read_text()
    p = re.sub(r"(Subject: \[PATCH[^\]]*\] vfio/platform: )(\w)", lambda m: m[1] + m[2].lower(), p)
    (tmp_path / "0001-x.patch").write_text(p)
    found = series.problems([series.Patch.read(tmp_path / "0001-x.patch")])
    assert any("starts lower-case" in f for f in found), found
    assert any("Link: tag to the RFC" in f for f in found), found
