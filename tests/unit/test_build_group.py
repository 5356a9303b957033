"""A build that is stopped (Ctrl-C, SIGTERM turned into KeyboardInterrupt by the plugin) is
stopped whole: make's sub-makes and compilers go with it before run_logged returns, because
the workspace lock is released right after (seen: only the top `make` was killed)."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from pytest_vfio_platform.images.progress import quiet, run_logged


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_an_interrupted_build_takes_its_whole_process_tree_with_it(tmp_path):
    pids = tmp_path / "pids"
    # a "make" whose "sub-makes" ignore SIGTERM, as a compiler mid-write may not die at once
    script = (
        f"sh -c 'trap \"\" TERM; sleep 300' & echo $! >> {pids}; "
        f"sh -c 'sleep 300' & echo $! >> {pids}; echo started; wait"
    )
    main = threading.main_thread().ident

    def interrupt() -> None:
        end = time.monotonic() + 10
        while time.monotonic() < end and len(pids.read_text().split() if pids.exists() else []) < 2:
            time.sleep(0.05)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_logged("fake build", ["sh", "-c", script], tmp_path / "log", quiet)
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2
    left = [p for p in children if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"build processes outlived the interrupted build: {left}"
