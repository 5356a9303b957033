"""The console fault tallies can go down: with the verifier broken on purpose the suite
must record cases as not survived (or data lost) and fail — a tally that stays at "all
survived" whatever the verifier does would measure nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.hil, pytest.mark.faults]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("mutant", "test"),
    [
        ("no-md5", "test_noisy_line_never_yields_a_wrong_answer"),
        ("keep-kmsg", "test_printk_storm_while_commands_run"),
    ],
)
def test_broken_verifier_lowers_the_tally_and_fails(lab_session, tmp_path, mutant, test):
    summary = tmp_path / "faults.json"
    env = {
        **os.environ,
        "VFIO_MUTANT": mutant,
        "VFIO_FAULT_EXAMPLES": "40",
        "VFIO_FAULT_NO_SHRINK": "1",
        "PYTHONPATH": str(Path(__file__).parent),
        "PYTEST_VFIO_PLATFORM_FAULTS_JSON": str(summary),
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "mutant_verifier"]
    cmd += [f"--lab={lab_session.lab.path}", f"--run-dir={tmp_path / 'run'}", "-x"]
    cmd += [f"tests/faults/test_console.py::{test}"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    out = r.stdout[-3000:] + r.stderr[-2000:]
    assert r.returncode == 1, f"the suite did not fail with the {mutant} verifier:\n{out}"
    assert summary.is_file(), out
    console = json.loads(summary.read_text())["classes"]["console"]
    assert console["survived"] < console["tried"] or console["lost_data"] > 0, (
        f"{mutant}: tally unchanged {console}\n{out}"
    )
