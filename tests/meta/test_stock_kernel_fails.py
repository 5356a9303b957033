"""Guard the guard: the HIL assignment suites must FAIL on a kernel without the change.

A HIL suite that passes on the stock kernel proves nothing about the patch. This runs the
host suites against `--kernel=stock` (same tree and config, no patches) in a child pytest and
requires every assignment test to fail with the kernel's refusal, never to pass or skip.
"""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.hil


def test_host_suite_fails_on_stock_kernel(lab_session, tmp_path):
    if lab_session.choice.kind == "stock":
        pytest.skip("already running on the stock kernel")
    junit = tmp_path / "stock.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--lab={lab_session.lab.path}",
        "--kernel=stock",
        f"--run-dir={tmp_path / 'run'}",
        f"--junitxml={junit}",
        "tests/hil/test_host_assign.py",
    ]
    if lab_session.choice.source:
        cmd.append(f"--kernel-src={lab_session.choice.source}")
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=root)
    assert junit.is_file(), f"child pytest wrote no report:\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}"
    cases = ET.parse(junit).getroot().iter("testcase")
    outcome = {}
    for c in cases:
        name = c.get("name")
        fail = c.find("failure")
        if fail is not None:
            outcome[name] = ("failed", fail.get("message", "") + (fail.text or ""))
        elif c.find("error") is not None:
            outcome[name] = ("error", c.find("error").get("message", ""))
        elif c.find("skipped") is not None:
            outcome[name] = ("skipped", "")
        else:
            outcome[name] = ("passed", "")
    assert outcome, "no test ran on the stock kernel"
    bad = {n: o for n, (o, _) in outcome.items() if o != "failed"}
    assert not bad, f"on the stock kernel these did not fail: {bad}"
    unexplained = [
        n for n, (_, msg) in outcome.items() if "emulated-IOMMU change is absent" not in msg
    ]
    assert not unexplained, f"failed without saying the change is absent: {unexplained}"
