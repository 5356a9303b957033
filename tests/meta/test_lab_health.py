"""--lab-health: a healthy board runs its tests; a board that cannot boot is reported offline
and its tests are skipped with that reason (not failed as kernel regressions) — and the run
is red, because nothing was checked."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.hil
ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path, kernel):
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--lab=qemu",
        f"--kernel={kernel}",
        "--lab-health",
        f"--run-dir={tmp_path / 'run'}",
        "-rs",
        "pytest_vfio_platform/suites/test_board.py",
        "-k",
        "exit_code",
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_healthy_board_runs_tests(lab_session, tmp_path):
    r = run(tmp_path, "patched")
    assert r.returncode == 0, r.stdout[-2000:]
    assert "board qemu/main: healthy" in r.stdout and "1 passed" in r.stdout


def test_unbootable_board_is_offline_tests_skipped_and_the_run_red(lab_session, tmp_path):
    broken = tmp_path / "Image-broken"
    data = bytearray(lab_session.files("default").kernel.read_bytes())
    data[64:] = bytes(len(data) - 64)
    broken.write_bytes(data)
    r = run(tmp_path, broken)
    assert r.returncode == 1, r.stdout[-2000:]
    assert "board qemu/main: OFFLINE — does not boot" in r.stdout
    assert "1 skipped" in r.stdout and "1 passed" not in r.stdout
    assert "this run is not a pass" in r.stdout
