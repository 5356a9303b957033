"""A pytest run on a rack killed with SIGKILL (no cleanup runs in it) leaves the place
unlocked, its reservation gone and the board powered off — checked on a rack of our own
(coordinator, exporter, QEMU board hosts) on free ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from labsim.local import LocalRack
from pytest_vfio_platform.provision import KernelChoice, boot_files
from pytest_vfio_platform.rack.cli import client

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.build  # the run boots the real kernel (cached after the first build)


def _holders(addr: str) -> list[str]:
    return [ln.split()[2] for ln in client(addr, "who").splitlines()[1:] if ln.strip()]


def _board_running(rack: LocalRack, place: str) -> bool:
    st = json.loads((rack.dir / place / "state.json").read_text())
    with urllib.request.urlopen(st["http"] + "/status", timeout=5) as r:
        return json.load(r)["running"]


def test_sigkilled_run_leaves_no_lock_and_the_board_off(own_rack, tmp_path):
    # build (or find) the boot files first: on a cold cache the run would spend minutes
    # building before it ever reserves a place
    boot_files(own_rack.lab, "default", KernelChoice.parse("patched"))
    addr = own_rack.coordinator
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "--lab=local-rack",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--run-dir={tmp_path / 'run'}",
            "pytest_vfio_platform/suites/test_board.py",
        ],
        cwd=ROOT,
        stdout=open(tmp_path / "run.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "LG_COORDINATOR": addr},
    )
    end = time.monotonic() + 300
    place = None
    while time.monotonic() < end and run.poll() is None:
        held = _holders(addr)
        if held and _board_running(own_rack, held[0]):
            place = held[0]
            break
        time.sleep(0.5)
    assert place, (
        f"the run never acquired and booted a board: {(tmp_path / 'run.log').read_text()[-2000:]}"
    )
    os.killpg(run.pid, signal.SIGKILL)  # the whole group, as a CI timeout does
    run.wait(10)
    end = time.monotonic() + 30
    while _holders(addr) and time.monotonic() < end:
        time.sleep(0.3)
    assert _holders(addr) == [], f"{place} still locked 30 s after the run was killed"
    assert "acquired" not in client(addr, "reservations")
    assert not _board_running(own_rack, place), "the killed run's board was left powered on"
