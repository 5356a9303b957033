"""Guard the guard: the HIL assignment suites must FAIL without the change.

A HIL suite that passes without the patch proves nothing about it. This runs the host, guest,
lifecycle, refusal and reset suites in a child pytest on `--kernel=stock` (same tree and config, no
patches, so no vfio-platform-nodma driver). Every test must fail or error with the "change
absent" explanation; none may pass or skip: a refusal that "passes" on a kernel that refuses
everything proves nothing.
"""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.hil
ROOT = Path(__file__).resolve().parents[2]
SUITES = [
    "pytest_vfio_platform/suites/test_host_assign.py",
    "pytest_vfio_platform/suites/test_guest.py",
    "pytest_vfio_platform/suites/test_guest_lifecycle.py",
    "pytest_vfio_platform/suites/test_refusal.py",
    "pytest_vfio_platform/suites/test_reset.py",
]
ABSENT = "emulated-IOMMU change is absent"


def outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    out = {}
    for c in ET.parse(junit).getroot().iter("testcase"):
        name = f"{c.get('classname')}::{c.get('name')}"
        for tag in ("failure", "error", "skipped"):
            el = c.find(tag)
            if el is not None:
                out[name] = (tag, (el.get("message") or "") + (el.text or ""))
                break
        else:
            out[name] = ("passed", "")
    return out


def test_assignment_suites_fail_without_the_change(lab_session, tmp_path):
    if lab_session.choice.kind == "stock":
        pytest.skip("already running on the stock kernel")
    without = "stock"
    junit = tmp_path / "without.xml"
    lab, kernel = str(lab_session.lab.path), "--kernel=stock"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--lab={lab}", kernel]
    cmd += [f"--run-dir={tmp_path / 'run'}", f"--junitxml={junit}", *SUITES]
    # the baselines: generic drivers in noiommu mode, which a stock kernel has (and, on
    # them, a dead user's state surviving: what the reset suite shows the change removes)
    cmd += ["-k", "not noiommu and not dead_users_state_survives"]
    if lab_session.choice.source:
        cmd.append(f"--kernel-src={lab_session.choice.source}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert junit.is_file(), f"child pytest wrote no report:\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}"
    got = outcomes(junit)
    for suite in SUITES:
        mod = suite.removesuffix(".py").replace("/", ".")
        assert any(n.startswith(mod + "::") for n in got), f"no test of {suite} ran ({without})"
    bad = {n: o for n, (o, _) in got.items() if o not in ("failure", "error")}
    assert not bad, f"without the change ({without}) these did not fail: {bad}"
    unexplained = [n for n, (_, msg) in got.items() if ABSENT not in msg]
    assert not unexplained, f"failed without saying the change is absent ({without}): {unexplained}"
