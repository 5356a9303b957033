"""The console relay: bytes go both ways unchanged, and only this user can reach the line
(pty slave and unix socket both 0600, no TCP)."""

import os
import socket
import stat
import time

from pytest_vfio_platform.ptyrelay import PtyRelay


def _read(fd: int, n: int, timeout: float = 5.0) -> bytes:
    out = b""
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        try:
            out += os.read(fd, n - len(out))
        except BlockingIOError:
            time.sleep(0.01)
    return out


def test_relay_is_private_and_transparent(tmp_path):
    relay = PtyRelay("guest", tmp_path / "guest.sock", stall_drop=None)
    try:
        assert stat.S_IMODE(os.stat(relay.port).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(relay.sock_path).st_mode) == 0o600
        qemu = socket.socket(socket.AF_UNIX)
        qemu.connect(str(relay.sock_path))
        tty = os.open(relay.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            time.sleep(0.3)  # the relay accepts
            data = bytes(range(256)) * 8 + b"\r\n\x1b[6n"
            qemu.sendall(data)
            assert _read(tty, len(data)) == data
            os.write(tty, b"echo hi\r")
            qemu.settimeout(5)
            assert qemu.recv(64) == b"echo hi\r"
        finally:
            os.close(tty)
            qemu.close()
    finally:
        relay.close()
    assert not relay.sock_path.exists()


def test_a_console_nobody_reads_is_not_dropped(tmp_path):
    """stall_drop=None (the guest's virtio console): output waits for the reader."""
    relay = PtyRelay("guest", tmp_path / "g.sock", stall_drop=None)
    try:
        qemu = socket.socket(socket.AF_UNIX)
        qemu.connect(str(relay.sock_path))
        tty = os.open(relay.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            data = os.urandom(64 * 1024)
            qemu.sendall(data)
            time.sleep(3)  # longer than a board UART's STALL_DROP_SECONDS
            assert _read(tty, len(data), timeout=10) == data
            assert relay.dropped == 0
        finally:
            os.close(tty)
            qemu.close()
    finally:
        relay.close()
