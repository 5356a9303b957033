"""The QEMU lab's board, booted with its guest console, listens on no TCP port: the guest's
root console used to be a free TCP port picked first and listened on by QEMU later, a race
any local user could win (and then a shell anyone on the host could open)."""

import subprocess

import pytest

pytestmark = [pytest.mark.hil]


def tcp_listeners_of(pid: int) -> list[str]:
    out = subprocess.run(["ss", "-H", "-ltnp"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]


@pytest.mark.variant("guest")
def test_the_board_with_its_guest_console_listens_on_no_tcp_port(board, lab):
    if lab.rack is not None:
        pytest.skip("a rack board's QEMU runs on its board host: tests/rack/test_listeners.py")
    drv = board.target.get_driver("QEMUDriver", activate=False)
    child = getattr(drv, "_child", None)
    assert child is not None and child.poll() is None, "the board's QEMU is not running"
    assert tcp_listeners_of(child.pid) == []
    # and the console the guest suites use is there: a pty only we can open
    res = board.target.env.get_target("guest").get_resource("RawSerialPort")
    assert res.port.startswith("/dev/pts/")
