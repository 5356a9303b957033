"""The end-of-session sweep finds a session's QEMU processes by their run directory — and
nothing else that happens to name it (the shell or `timeout` that started pytest)."""

import subprocess
import time
from pathlib import Path

from pytest_vfio_platform.session import processes_naming


def _started(p: subprocess.Popen) -> None:
    end = time.monotonic() + 5
    while time.monotonic() < end:  # exec done: argv no longer python's
        if b"python" not in Path(f"/proc/{p.pid}/cmdline").read_bytes():
            return
        time.sleep(0.01)


def test_finds_only_the_named_program(tmp_path):
    fake_qemu = tmp_path / "qemu-system-aarch64"  # the run dir is in its command line
    fake_qemu.symlink_to("/bin/sleep")
    board = subprocess.Popen([str(fake_qemu), "30"])
    other = subprocess.Popen(["sh", "-c", "sleep 30", str(tmp_path)])
    try:
        _started(board)
        _started(other)
        found = {pid for pid, _ in processes_naming(tmp_path, "qemu-system")}
        assert board.pid in found
        assert other.pid not in found
        assert not processes_naming(tmp_path / "elsewhere", "qemu-system")
    finally:
        for p in (board, other):
            p.kill()
            p.wait()
