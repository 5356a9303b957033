"""Make a device interrupt from outside the board, the way the real world would.

Why from outside: an interrupt the board raises on itself proves little; bytes arriving on a
UART line, a button press, an RTC alarm are what a guest owning the device must see.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING

from .lab import SELF_TIMED, Device

if TYPE_CHECKING:
    from .board import Board


class UartPeer:
    """The far end of a board UART: QEMU's `-serial unix:` socket on this machine, or a rack
    board's line through the exporter's ser2net (RFC 2217).

    A thread drains the line all the time, like a real peer: QEMU writes each transmitted
    byte separately, a unix socket's send buffer fills after a few hundred of them, and a
    board whose UART output nobody reads stalls (QEMU blocks in the write)."""

    @classmethod
    def unix(cls, path: str, timeout: float = 5.0) -> UartPeer:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
        sock.settimeout(0.2)
        return cls(_SocketLine(sock))

    @classmethod
    def rfc2217(cls, host: str, port: int) -> UartPeer:
        import serial  # pyserial-labgrid, labgrid's own

        # ign_set_control as labgrid's SerialDriver: ser2net on a line without modem control
        # lines (a pty here, many adapters' TX/RX-only wiring) never acknowledges DTR/RTS
        url = f"rfc2217://{host}:{port}?ign_set_control"
        ser = serial.serial_for_url(url, baudrate=115200, timeout=0.2)
        return cls(_SerialLine(ser))

    def __init__(self, line: _SocketLine | _SerialLine) -> None:
        self.line = line
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while not self._closed:
            try:
                chunk = self.line.recv()
            except OSError:
                break
            if chunk is None:
                break
            if not chunk:
                continue
            with self._cond:
                self._buf += chunk
                self._cond.notify_all()

    def send(self, data: bytes) -> None:
        self.line.send(data)

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
        self.line.close()
        self._reader.join(timeout=2)


class _SocketLine:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self) -> bytes | None:
        """Bytes, b"" when nothing arrived for a moment, None at end of line."""
        try:
            return self.sock.recv(65536) or None
        except TimeoutError:
            return b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


class _SerialLine:
    def __init__(self, ser: object) -> None:
        self.ser = ser

    def recv(self) -> bytes | None:
        return self.ser.read(max(1, self.ser.in_waiting))

    def send(self, data: bytes) -> None:
        self.ser.write(data)
        self.ser.flush()

    def close(self) -> None:
        self.ser.close()


def pulse(board: Board, device: Device, peer: UartPeer | None = None, n: int = 0) -> str:
    """One stimulus event for device; returns a description for the evidence."""
    kind = device.stimulus.kind
    if kind == "uart-socket":
        assert peer is not None
        peer.send(bytes([0x41 + n % 26]))
        return f"byte {0x41 + n % 26:#x} into {device.stimulus.socket}"
    if kind == "qmp-powerdown":
        board.press_power_button()
        return f"power key pulse (GPIO line {device.stimulus.line})"
    if kind in SELF_TIMED:
        return "none (the device interrupts by itself once set up)"
    raise ValueError(f"device {device.name} has no external stimulus")
