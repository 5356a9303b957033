"""Make a device interrupt from outside the board, the way the real world would.

Why from outside: an interrupt the board raises on itself proves little; bytes arriving on a
UART line, a button press, an RTC alarm are what a guest owning the device must see.
"""

from __future__ import annotations

import socket
import time

from .board import Board
from .lab import Device


class UartPeer:
    """The far end of a board UART: the test's side of QEMU's `-serial unix:` socket."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exactly(self, n: int, timeout: float = 10.0) -> bytes:
        buf = b""
        end = time.monotonic() + timeout
        while len(buf) < n and time.monotonic() < end:
            self.sock.settimeout(max(0.05, end - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            buf += chunk
        return buf

    def close(self) -> None:
        self.sock.close()


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
