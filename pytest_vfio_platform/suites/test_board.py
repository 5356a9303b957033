"""The board itself: the kernel asked for is the one running, commands return exit codes and
output intact, and a panicked board is caught, its log kept, and replaced by a fresh boot."""

import pytest

from pytest_vfio_platform.errors import BoardError

pytestmark = pytest.mark.hil


def test_board_runs_the_kernel_asked_for(board, lab_session):
    files = lab_session.files("default")
    if lab_session.choice.kind == "path":
        assert board.uname().startswith("6.")
    else:
        assert board.uname() == files.kernel_release
        assert board.uname().endswith(f"-{lab_session.choice.kind}")
    assert files.boot_args in board.check("cat /proc/cmdline")


def test_run_returns_exit_code_and_output(board):
    r = board.run("echo out; echo err >&2; exit 3")
    assert (r.rc, r.out.splitlines()) == (3, ["out", "err"])
    # 64 KiB of output generated on the board comes back line for line
    out = board.check("i=0; while [ $i -lt 1024 ]; do printf '%04d%060d\\n' $i 0; i=$((i+1)); done")
    lines = out.splitlines()
    assert lines == [f"{i:04d}{0:060d}" for i in range(1024)]


def test_panic_is_detected_logged_and_board_recovers(board, lab_session):
    with pytest.raises(BoardError) as e:
        board.run("echo c > /proc/sysrq-trigger", timeout=5)
    assert "kernel crash" in str(e.value) and "sysrq" in str(e.value).lower()
    assert board.needs_reboot
    log = board.console_log.read_bytes()
    assert b"Kernel panic - not syncing" in log
    fresh = lab_session.board("default")
    assert fresh.check("echo alive").strip() == "alive"
    assert fresh.taint() == 0
