"""The ACPI lab in CI: the board booted by EDK2 with ACPI tables and no DT refuses its ACPI
PrimeCell and says it is because it is ACPI (labs/qemu-acpi.yaml). Without this the ACPI rule
of the change would be checked only by ci/mutate, which CI does not run."""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.hil
ROOT = Path(__file__).resolve().parents[2]


def test_the_acpi_board_refuses_its_acpi_primecell(lab_session, tmp_path):
    junit = tmp_path / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--lab=qemu-acpi"]
    cmd += [f"--run-dir={tmp_path / 'run'}", f"--junitxml={junit}", "-rfEs"]
    cmd += ["pytest_vfio_platform/suites/test_refusal.py"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    passed = {
        c.get("name")
        for c in ET.parse(junit).getroot().iter("testcase")
        if not list(c)  # no failure, error or skip child
    }
    assert "test_dma_capable_device_is_refused_with_reason[gpio-acpi]" in passed, passed
    assert "test_no_device_is_taken_without_driver_override" in passed, passed
    console = (tmp_path / "run" / "console.log").read_text(errors="replace")
    assert "ARMH0061:00: refused: ACPI device" in console
    assert "EFI stub" in console  # it was the firmware boot, not a DT one
