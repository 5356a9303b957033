"""ci/gate end to end on the QEMU lab: PASS for patched vs patched, REGRESSION for
patched -> stock, INFRASTRUCTURE when the candidate board cannot boot."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.hil

ROOT = Path(__file__).resolve().parents[2]
SUITE = [
    "--",
    "pytest_vfio_platform/suites/test_host_assign.py",
    "-k",
    "test_bind_gives_vfio_group_without_taint",
]


def gate(tmp_path, baseline, candidate, *extra, suite=SUITE):
    junit = tmp_path / "gate.xml"
    cmd = [
        sys.executable,
        str(ROOT / "ci/gate"),
        f"--baseline={baseline}",
        f"--candidate={candidate}",
    ]
    cmd += [f"--junit={junit}", f"--out={tmp_path / 'runs'}", *extra, *suite]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    return r.returncode, r.stdout + r.stderr, junit.read_text() if junit.exists() else ""


def test_patched_vs_patched_passes(lab_session, tmp_path):
    rc, out, junit = gate(tmp_path, "patched", "patched")
    assert rc == 0, out
    assert "gate: PASS" in out and 'value="PASS"' in junit


def test_patched_to_stock_is_a_regression_naming_each_test(lab_session, tmp_path):
    rc, out, junit = gate(tmp_path, "patched", "stock")
    assert rc == 1, out
    for dev in ("uart0", "gpio", "rtc"):
        assert (
            f"REGRESSION  pytest_vfio_platform/suites/test_host_assign.py::test_bind_gives_vfio_group_without_taint[{dev}]"
            in out
        )
    assert 'failures="3"' in junit


def broken_image(lab_session, tmp_path):
    broken = tmp_path / "Image-broken"
    data = bytearray(lab_session.files("default").kernel.read_bytes())
    data[64:] = bytes(len(data) - 64)  # keeps the arm64 header; the code is gone
    broken.write_bytes(data)
    return broken


def test_board_that_does_not_boot_is_infrastructure_not_regression(lab_session, tmp_path):
    broken = broken_image(lab_session, tmp_path)
    rc, out, junit = gate(tmp_path, "patched", str(broken), "--retries=1")
    assert rc == 2, out
    assert "gate: INFRASTRUCTURE" in out and "REGRESSION  " not in out
    assert "did not reach a shell" in out
    # the infrastructure failures were retried once, the product run was not
    runs = sorted(p.name for p in (tmp_path / "runs").glob("*.xml"))
    assert runs == ["baseline-0.xml", "candidate-0.xml", "candidate-1.xml"], runs


def test_unbootable_candidate_under_lab_health_is_infrastructure_not_pass(lab_session, tmp_path):
    """--lab-health skips every test of an offline board: the candidate checked nothing, so
    the gate must not say PASS (it once did: '0 tests compared', exit 0)."""
    broken = broken_image(lab_session, tmp_path)
    rc, out, junit = gate(
        tmp_path, "patched", str(broken), "--retries=0", suite=[*SUITE, "--lab-health"]
    )
    assert rc == 2, out
    assert "gate: INFRASTRUCTURE" in out and "gate: PASS" not in out
    assert "skipped on the candidate by the lab: board qemu/main: OFFLINE" in out
    assert "nothing was checked" in out
    assert 'value="INFRASTRUCTURE"' in junit
