"""The board host's QMP client (labsim/qmp.py, labgrid's QMPMonitor underneath) against a
real QEMU: a command's answer, QEMU's own error as QmpError (not labgrid's TypeError), and a
clear error when QEMU goes away."""

import shutil
import subprocess

import pytest

from labsim.qmp import Qmp, QmpError

QEMU = shutil.which("qemu-system-aarch64")


@pytest.fixture
def qemu(tmp_path):
    if QEMU is None:
        pytest.fail("qemu-system-aarch64 is missing: run ci/setup")
    sock = tmp_path / "qmp.sock"
    p = subprocess.Popen(
        [QEMU, "-M", "virt", "-S", "-display", "none", "-nodefaults"]
        + ["-qmp", f"unix:{sock},server=on,wait=off"]
    )
    yield p, sock
    p.kill()
    p.wait()


def test_commands_errors_and_a_vanished_qemu(qemu):
    p, sock = qemu
    q = Qmp(sock)
    try:
        assert q.command("query-status")["status"] == "prelaunch"
        with pytest.raises(QmpError, match="QMP no-such-command"):
            q.command("no-such-command")
        assert q.command("query-status")["running"] is False  # still in step after an error
        p.kill()
        p.wait()
        with pytest.raises(QmpError, match="QMP query-status"):
            q.command("query-status")
    finally:
        q.close()


def test_no_socket_is_a_clear_error(tmp_path):
    with pytest.raises(QmpError, match="no QMP socket at"):
        Qmp(tmp_path / "none.sock", timeout=0.3)
