"""`pytest --lab=local-rack -n 2`: every HIL suite, through a real coordinator, one xdist
worker per place, both boards used — the device lab's path end to end, minus the phones."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.build


def test_hil_suites_pass_on_two_places_at_once(own_rack, tmp_path):
    junit = tmp_path / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "--lab=local-rack", "-n", "2", "-p", "no:cacheprovider"]
    cmd += [
        "-q",
        f"--run-dir={tmp_path / 'run'}",
        f"--junitxml={junit}",
        "pytest_vfio_platform/suites",
    ]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    assert r.returncode == 0 and counts["failures"] == counts["errors"] == 0, (
        f"{counts}\n{r.stdout[-4000:]}"
    )
    assert counts["tests"] - counts["skipped"] >= 30, counts
    boards = set()
    for boots in (tmp_path / "run").glob("gw*/boots.jsonl"):
        boards |= {json.loads(line)["board"] for line in boots.read_text().splitlines()}
    assert boards == {"local-rack/board-1", "local-rack/board-2"}, boards
    assert own_rack.status().count("running") == 4  # coordinator, exporter, two board hosts
