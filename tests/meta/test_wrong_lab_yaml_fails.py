"""The host suite checks against the board, not against the file: a lab YAML whose
inventory disagrees with the DT the board booted (a wrong SPI, a wrong region size) must
make the suite fail, naming both — not pass because VFIO and the YAML agree by chance."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.hil
ROOT = Path(__file__).resolve().parents[2]


def test_inventory_that_disagrees_with_the_booted_dt_fails(lab_session, tmp_path):
    doc = yaml.safe_load(lab_session.lab.path.read_text())
    doc.pop("inherit", None)
    by_name = {d["name"]: d for d in doc["devices"]}
    by_name["gpio"]["irq"]["spi"] += 1
    by_name["uart0"]["mmio"]["size"] *= 2
    lab = tmp_path / "wrong.yaml"
    lab.write_text(yaml.safe_dump(doc, sort_keys=False))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--lab={lab}"]
    cmd += [
        f"--run-dir={tmp_path / 'run'}",
        "pytest_vfio_platform/suites/test_host_assign.py",
        "-rf",
    ]
    cmd += ["-k", "(regions_and_irqs and group) or interrupt_arrives"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    out = r.stdout
    assert r.returncode == 1, out[-3000:]
    failed = [ln for ln in out.splitlines() if ln.startswith("FAILED")]
    for case in ("regions_and_irqs_match_dt[uart0-group]", "regions_and_irqs_match_dt[gpio-group]"):
        assert any(case in ln for ln in failed), f"{case} did not fail:\n{out[-3000:]}"
    assert any("interrupt_arrives_on_eventfd_and_unmask_rearms[gpio]" in ln for ln in failed)
    assert "the lab YAML says" in out
    assert not any("[rtc" in ln for ln in failed), "a device the YAML got right failed"
