"""The end-of-session sweep finds a session's QEMU processes by their run directory — and
nothing else that happens to name it (the shell or `timeout` that started pytest)."""

import subprocess
import time
from pathlib import Path

from pytest_vfio_platform.session import processes_naming


def _started(p: subprocess.Popen) -> None:
    end = time.monotonic() + 5
    want = str(p.args[0]).encode()
    while time.monotonic() < end:  # exec done: argv is the new program's (mid-exec it is empty)
        if Path(f"/proc/{p.pid}/cmdline").read_bytes().split(b"\0")[0] == want:
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


def test_a_run_dir_is_not_taken_for_a_prefix_of_another():
    """gw1's sweep must not kill gw10's boards (seen: `str(path) in args`)."""
    from pytest_vfio_platform.session import names_path

    gw1, gw10 = Path("/r/20261202-1/gw1"), Path("/r/20261202-1/gw10")
    qemu10 = ["-chardev", f"socket,id=c,path={gw10}/console.sock,server=on", "-D", f"{gw10}/x"]
    assert names_path(qemu10, gw10)
    assert not names_path(qemu10, gw1)
    assert names_path(["-serial", f"unix:{gw1}/uart0.sock,server=on,wait=off"], gw1)
    assert names_path([f"file={gw1}"], gw1)
    assert not names_path([f"{gw1}0/x"], gw1)


def test_gw1_sweep_leaves_gw10_alone(tmp_path):
    gw1, gw10 = tmp_path / "gw1", tmp_path / "gw10"
    gw10.mkdir()
    (gw10 / "console.log").touch()
    fake_qemu = tmp_path / "qemu-system-aarch64"  # a program that waits and takes a path
    fake_qemu.symlink_to("/usr/bin/tail")
    p = subprocess.Popen([str(fake_qemu), "-f", f"{gw10}/console.log"])
    try:
        _started(p)
        assert p.pid in {pid for pid, _ in processes_naming(gw10, "qemu-system")}
        assert p.pid not in {pid for pid, _ in processes_naming(gw1, "qemu-system")}
    finally:
        p.kill()
        p.wait()


def test_two_sessions_in_the_same_second_get_their_own_run_dirs(monkeypatch):
    from pytest_vfio_platform.plugin import default_run_dir

    monkeypatch.delenv("PYTEST_XDIST_TESTRUNUID", raising=False)
    now = time.time()
    assert default_run_dir(now) != default_run_dir(now)
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "0123456789abcdef")
    assert default_run_dir(now) == default_run_dir(now)  # one run's workers: one directory
    assert default_run_dir(now).name.endswith("-01234567")
