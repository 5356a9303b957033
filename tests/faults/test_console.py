"""Console faults on a real board: bytes dropped, duplicated, flipped or injected, kernel
messages spliced into command output, a printk storm while commands run. Every command must
come back with its true exit code and output, or fail clearly (ConsoleGarbled, BoardError) —
never with a wrong answer."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pytest_vfio_platform import shellrun
from pytest_vfio_platform.errors import BoardError
from tests.support.noise import KINDS, Fault, FaultyConsole

pytestmark = [pytest.mark.hil, pytest.mark.faults]

faults = st.lists(
    st.builds(
        Fault,
        kind=st.sampled_from(KINDS),
        offset=st.integers(0, 420),
        size=st.integers(1, 6),
    ),
    max_size=4,
)


@pytest.fixture
def noisy(board, monkeypatch):
    """The board with its console behind a FaultyConsole; short read-back timeouts so a
    case whose prompt got mangled costs seconds, not minutes."""
    monkeypatch.setattr(shellrun, "FETCH_TIMEOUT", 1.5)
    # the shell driver's own console binding is swapped (labgrid binds drivers through
    # attributes), so the product needs no hook for it; undone after the test
    shell = board.shell
    wire = FaultyConsole(shell.console)
    monkeypatch.setattr(shell, "console", wire)
    yield board, wire


# VFIO_FAULT_EXAMPLES / VFIO_FAULT_NO_SHRINK: the mutation check (test_fault_tallies.py)
# runs this suite against a broken verifier with fewer examples and no shrinking
EXAMPLES = int(os.environ.get("VFIO_FAULT_EXAMPLES", "300"))
PHASES = (
    (Phase.explicit, Phase.reuse, Phase.generate)
    if os.environ.get("VFIO_FAULT_NO_SHRINK")
    else tuple(Phase)
)


MIN_STORM_ANSWERS = 30


@settings(
    max_examples=EXAMPLES,
    phases=PHASES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=faults, rc=st.integers(0, 3), lines=st.integers(0, 5))
def test_noisy_line_never_yields_a_wrong_answer(noisy, fault_recorder, plan, rc, lines):
    """A case survives only by ending the way a console fault must: the right answer, or a
    clean ConsoleGarbled — and the board answering on a clean line afterwards. A hang or a
    dead board is not survived (this case injected neither). Only faults that were applied
    to the traffic make a case; a plan whose offsets lay past it is a clean control run."""
    board, wire = noisy
    payload = [f"line-{i}-{'x' * (i * 7)}" for i in range(lines)]
    cmd = "".join(f"echo {p}; " for p in payload) + f"exit {rc}"
    wire.arm(plan)
    r, ended = None, ""
    try:
        r = board.run(cmd, timeout=3)
    except shellrun.ConsoleGarbled as e:
        ended = f"garbled: {e}"
    except BoardError as e:
        ended = f"NOT a console outcome: {e}"
    finally:
        applied = wire.applied_faults()
        wire.arm([])
    case = ",".join(f"{f.kind}@{f.offset}x{f.size}" for f in applied) or "clean"
    right = r is not None and r.rc == rc and r.out == "\n".join(payload)
    wrong = r is not None and not right
    try:  # recovery first: a case counts only once the board answers on a clean line
        recovered = board.run("echo clean").out == "clean"
    except BoardError as e:
        recovered, ended = False, f"{ended}; no answer afterwards: {e}"
    survived = recovered and (right or ended.startswith("garbled"))
    if applied:
        detail = ended or f"rc={r.rc} out={r.out!r}"
        fault_recorder.record("console", case, survived=survived, lost_data=wrong, detail=detail)
    assert not wrong, f"wrong answer under {case}: rc {r.rc} (want {rc}), output {r.out!r}"
    assert survived, f"under {case}: {ended or 'no answer'}; board answering after: {recovered}"


def test_printk_storm_while_commands_run(board, fault_recorder):
    """Kernel messages interleaved with command output, on the real line: a background writer
    floods /dev/kmsg (printed on the console at warning level) while commands run. With
    printk.time=1 (the lab's command line) the host takes them out of the answer; whatever
    still does not verify must fail clearly."""
    board.check("echo 8 > /proc/sys/kernel/printk")
    storm = (
        '( i=0; while [ $i -lt 3000 ]; do echo "<4>storm $i $i $i $i $i" > /dev/kmsg; '
        "usleep 3000; i=$((i+1)); done ) >/dev/null 2>&1 & echo $! > /tmp/storm.pid"
    )
    try:  # the storm starts at once: this very command's answer may not verify
        board.run(storm)
    except shellrun.ConsoleGarbled:
        pass
    answers, clear_failures = 0, 0
    try:
        assert board.check("cat /tmp/storm.pid").strip().isdigit()
        for n in range(40):
            want = "\n".join(f"{n}-{k}-{'y' * 40}" for k in range(8))
            cmd = f"for k in 0 1 2 3 4 5 6 7; do echo {n}-$k-{'y' * 40}; done; exit {n % 4}"
            try:
                r = board.run(cmd, timeout=10)
            except shellrun.ConsoleGarbled as e:
                clear_failures += 1
                fault_recorder.record("console", f"printk storm #{n}", True, False, str(e))
                continue
            right = r.rc == n % 4 and r.out == want
            fault_recorder.record("console", f"printk storm #{n}", right, not right, r.out[-200:])
            assert right, f"wrong answer during the storm: rc {r.rc}, output {r.out!r}"
            answers += 1
    finally:
        # a verifier that gives up on every kernel line would "survive" by garbling
        # everything: most commands must get through (kernel lines are taken out)
        fault_recorder.record(
            "console",
            f"printk storm: at least {MIN_STORM_ANSWERS} of 40 answered",
            answers >= MIN_STORM_ANSWERS,
            False,
            f"{answers} answered, {clear_failures} garbled",
        )
        board.run("kill $(cat /tmp/storm.pid) 2>/dev/null; echo 7 4 1 7 > /proc/sys/kernel/printk")
    assert answers >= MIN_STORM_ANSWERS, (
        f"only {answers} of 40 commands got through the printk storm ({clear_failures} garbled)"
    )
    stormy = board.console_since(0).count(b"storm ")
    assert stormy > 100, f"the storm did not reach the console ({stormy} lines)"
