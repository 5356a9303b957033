"""Boards that hang, panic or die under a test, and runs that get killed: each is detected,
named and categorised; the session goes on (or ends cleanly); nothing is left running.

The session-level cases run a small test file in a child pytest on the QEMU lab, as a user
would, and read its JUnit through the gate's own classifier."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pytest_vfio_platform import shellrun
from pytest_vfio_platform.errors import BoardError
from pytest_vfio_platform.gate import read_junit
from pytest_vfio_platform.session import processes_naming

pytestmark = pytest.mark.faults


@pytest.mark.hil
def test_stopped_board_is_detected_within_bound_and_power_cycled(
    board, lab_session, fault_recorder
):
    """QMP `stop` freezes the board mid-command (as a wedged SoC would): run() must give up
    within timeout + two read-backs, and the next board() call power-cycles it."""
    timeout = 4.0
    bound = timeout + 2 * shellrun.FETCH_TIMEOUT + 5
    threading.Timer(0.5, lambda: board.qmp("stop")).start()
    t0 = time.monotonic()
    with pytest.raises(BoardError) as e:
        board.run("sleep 2; echo finished", timeout=timeout)
    took = time.monotonic() - t0
    detected = "board hung" in str(e.value) and took < bound and board.needs_reboot
    # recovery is part of the case: survived only once the power-cycled board answers
    after = ""
    try:
        alive = lab_session.board("default").check("echo alive").strip() == "alive"
    except BoardError as err:
        alive, after = False, f"; after the power cycle: {err}"
    ok = detected and alive
    detail = f"{took:.1f}s, answering after the power cycle: {alive}; {e.value}{after}"
    fault_recorder.record(
        "hang/panic", "QMP stop mid-command, then power-cycled", ok, False, detail
    )
    assert ok, f"hang detected after {took:.1f}s (bound {bound:.0f}s): {detail}"


SESSION = textwrap.dedent(
    """
    import os, signal, time
    import pytest

    pytestmark = pytest.mark.hil

    def test_1_panics(board):
        board.run("echo c > /proc/sysrq-trigger", timeout=10)

    def test_2_after_panic(board):
        assert board.check("echo ok").strip() == "ok"

    def test_3_qemu_killed(board):
        qemu = board.target.get_driver("QEMUDriver")._child
        board.check("echo before")
        qemu.kill()
        board.run("sleep 1; echo after", timeout=5)

    def test_4_after_kill(board):
        assert board.check("echo ok").strip() == "ok"

    def test_5_waits(board):
        open(os.environ["READY_FILE"], "w").close()
        time.sleep(600)
    """
)


def _qemus(rundir: Path) -> list[str]:
    return [f"{pid}: {args[:200]}" for pid, args in processes_naming(rundir, "qemu-system")]


@pytest.mark.hil
def test_panic_and_killed_qemu_are_categorised_and_the_session_goes_on(
    lab_session, tmp_path, fault_recorder
):
    (tmp_path / "test_session.py").write_text(SESSION)
    junit, rundir, ready = tmp_path / "junit.xml", tmp_path / "run", tmp_path / "ready"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        f"--lab={lab_session.lab.path}",
        "-p",
        "no:cacheprovider",
    ]
    cmd += [f"--junitxml={junit}", f"--run-dir={rundir}", "-q", "test_session.py"]
    p = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env={**os.environ, "READY_FILE": str(ready)},
        stdout=open(tmp_path / "out.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    end = time.monotonic() + 600
    while not ready.exists() and p.poll() is None and time.monotonic() < end:
        time.sleep(0.3)
    assert ready.exists(), (tmp_path / "out.log").read_text()[-3000:]
    assert _qemus(rundir), "the waiting test's board is not running?"
    p.send_signal(signal.SIGTERM)  # a CI timeout / lab scheduler ending the run
    rc = p.wait(60)
    out = (tmp_path / "out.log").read_text()
    res = {k.rsplit("::", 1)[-1]: v for k, v in read_junit(junit).items()}
    expect = {
        "test_1_panics": "kernel-crash",
        "test_2_after_panic": "passed",
        "test_3_qemu_killed": "infrastructure",
        "test_4_after_kill": "passed",
    }
    for name, want in expect.items():
        got = res[name].cls if name in res else "missing"
        ok = got == want
        fault_recorder.record("hang/panic" if "panic" in name else "killed", name, ok, False, got)
        assert ok, f"{name}: {got} (want {want})\n{out[-3000:]}"
    assert b"Kernel panic - not syncing" in (rundir / "console.log").read_bytes()
    orphans = _qemus(rundir)
    fault_recorder.record(
        "killed", "SIGTERM mid-test: no QEMU left", not orphans, False, str(orphans)
    )
    assert not orphans, f"QEMU left running after SIGTERM: {orphans}"
    # ... and not because the session's last-resort sweep had to kill it
    assert "left behind" not in out, out[-2000:]
    assert rc != 0 and ("KeyboardInterrupt" in out or "terminated by signal" in out), out[-2000:]
    fault_recorder.record("killed", "SIGTERM ends the session cleanly", True, False, f"rc={rc}")
