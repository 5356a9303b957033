"""Run a long build command with its output kept in a log and a heartbeat on the terminal.

Why: a five-minute kernel build that prints nothing looks hung, and one that prints everything
buries the test output. The heartbeat names the step, the time spent and the last action.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import BuildError

Progress = Callable[[str], None]


def stderr_progress(msg: str) -> None:
    print(f"[vfio-platform] {msg}", file=sys.stderr, flush=True)


def quiet(msg: str) -> None:  # noqa: ARG001 - a Progress that discards
    pass


def run_logged(
    what: str,
    cmd: Sequence[str],
    log: Path,
    progress: Progress,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    heartbeat: float = 10.0,
) -> float:
    """Run cmd appending its output to log; raise BuildError naming the log on failure.

    Returns the wall time. The last lines of output go into the error message so the usual
    compiler error is visible without opening the log.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    last = [""]
    count = [0]
    tail: list[str] = []
    with open(log, "a", buffering=1) as logf:
        logf.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: sub-makes and compilers with it
        )
        done = threading.Event()

        def beat() -> None:
            while not done.wait(heartbeat):
                el = time.monotonic() - start
                progress(
                    f"{what}: {int(el // 60)}m{int(el % 60):02d}s, {count[0]} steps, {last[0]}"
                )

        t = threading.Thread(target=beat, daemon=True)
        t.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                logf.write(line)
                s = line.strip()
                if s:
                    count[0] += 1
                    last[0] = s[:100]
                    tail.append(s)
                    del tail[:-15]
            rc = proc.wait()
        except BaseException:
            kill_group(proc)
            raise
        finally:
            done.set()
            t.join()
    elapsed = time.monotonic() - start
    if rc != 0:
        raise BuildError(
            f"{what} failed (exit {rc}); last output:\n    " + "\n    ".join(tail), str(log)
        )
    return elapsed


def kill_group(proc: subprocess.Popen, grace: float = 2.0, timeout: float = 10.0) -> None:
    """Stop a build and everything it started, and return only once all of it is gone: the
    caller releases the workspace lock next, and a compiler still writing there would
    corrupt the next build (killing only the top `make` left its sub-makes running)."""
    pgid = proc.pid  # start_new_session: the group is the child's own pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, timeout)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        end = time.monotonic() + wait
        while time.monotonic() < end:
            proc.poll()  # reap the leader, or the group never empties
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                proc.wait()
                return
            time.sleep(0.05)
    proc.wait()
