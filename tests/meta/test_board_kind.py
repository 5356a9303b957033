"""A board kind of a lab's own, end to end: one module with a Board subclass and a lab file
naming it (`board: {type: MODULE:CLASS}`) run the shipped suites — the session boots that
class, and the run's record says so. A kind that cannot be loaded stops the run at once,
naming the lab file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.hil
ROOT = Path(__file__).resolve().parents[2]

BENCH = '''
from pytest_vfio_platform.board import Board


class BenchBoard(Board):
    """The QEMU board under a bench's own name (what a real kind would override: power,
    console, how it boots)."""

    def name(self):
        return "bench/" + super().name()
'''


def _run(tmp_path: Path, board_type: str, *extra: str) -> subprocess.CompletedProcess:
    labs = tmp_path / "labs"
    labs.mkdir(exist_ok=True)
    (labs / "bench_board.py").write_text(BENCH)
    (labs / "bench.yaml").write_text(
        f"name: bench\ninherit: qemu\nboard: {{type: {board_type!r}}}\n"
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--lab=bench"]
    cmd += [f"--lab-dir={labs}", f"--run-dir={tmp_path / 'run'}", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(labs), str(ROOT)])}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)


def test_a_board_kind_of_ones_own_runs_the_suites(lab_session, tmp_path):
    r = _run(
        tmp_path,
        "bench_board:BenchBoard",
        "pytest_vfio_platform/suites/test_board.py",
        "-k",
        "asked_for or exit_code",
    )
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    boots = (tmp_path / "run" / "boots.jsonl").read_text().splitlines()
    assert {json.loads(line)["board"] for line in boots} == {"bench/bench/main"}, boots


def test_a_board_kind_that_cannot_load_stops_the_run(tmp_path):
    r = _run(tmp_path, "bench_board:NoSuchBoard", "pytest_vfio_platform/suites/test_board.py")
    assert r.returncode == 4, r.stdout[-2000:] + r.stderr[-2000:]
    assert "bench.yaml: board.type 'bench_board:NoSuchBoard'" in r.stderr, r.stderr[-2000:]
    assert "no Board subclass NoSuchBoard" in r.stderr
