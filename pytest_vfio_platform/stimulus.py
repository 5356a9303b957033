"""Make a device interrupt from outside the board, the way the real world would.

Why from outside: an interrupt the board raises on itself proves little; bytes arriving on a
UART line, a button press, an RTC alarm are what a guest owning the device must see.
"""

from __future__ import annotations

import socket
import threading
import time

from .board import Board
from .lab import Device


class UartPeer:
    """The far end of a board UART: the test's side of QEMU's `-serial unix:` socket.

    A thread drains the socket all the time, like a real peer: QEMU writes each transmitted
    byte separately, a unix socket's send buffer fills after a few hundred of them, and a
    board whose UART output nobody reads stalls (QEMU blocks in the write)."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.sock.settimeout(0.2)
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while not self._closed:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            with self._cond:
                self._buf += chunk
                self._cond.notify_all()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def take(self) -> bytes:
        """Everything received so far (and forget it)."""
        with self._cond:
            data = bytes(self._buf)
            self._buf.clear()
            return data

    def recv_exactly(self, n: int, timeout: float = 10.0) -> bytes:
        """n bytes, or fewer if they did not all arrive within timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            while len(self._buf) < n and time.monotonic() < end:
                self._cond.wait(timeout=max(0.01, end - time.monotonic()))
            data = bytes(self._buf[:n])
            del self._buf[:n]
            return data

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        self._reader.join(timeout=2)


def pulse(board: Board, device: Device, peer: UartPeer | None = None, n: int = 0) -> str:
    """One stimulus event for device; returns a description for the evidence."""
    kind = device.stimulus.kind
    if kind == "uart-socket":
        assert peer is not None
        peer.send(bytes([0x41 + n % 26]))
        return f"byte {0x41 + n % 26:#x} into {device.stimulus.socket}"
    if kind == "qmp-powerdown":
        board.qmp("system_powerdown")
        return f"QMP system_powerdown (GPIO line {device.stimulus.line})"
    if kind == "rtc-match":
        return "none (the RTC match register fires by itself)"
    raise ValueError(f"device {device.name} has no external stimulus")
