"""A serial line of a QEMU board, presented as a pseudo-terminal only its owner can open.

Why a pty and not a TCP port: a console is a root shell without login. A TCP listener on
loopback is open to every local user, and a free port picked first and listened on later is
a race a neighbour can win. A pty slave with mode 0600 and a unix socket with mode 0600 are
reachable by this user only, and labgrid drives a pty as it drives a USB serial adapter
(`RawSerialPort`), also through ser2net on a rack's exporter.

Why a relay and not QEMU's own `-serial pty`: QEMU's pty gets a new /dev/pts/N on every start,
and a power cycle restarts QEMU; the exporter and its clients must keep one path. So the
owner keeps the pty for its whole life and relays bytes to whichever QEMU is running (QEMU's
chardev connects to the relay's unix socket), as a USB serial adapter stays put while the
board behind it reboots.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import termios
import threading
import time
import tty
from pathlib import Path

# A reader that takes nothing for this long is treated as absent: output is dropped, as a
# real UART's would be with nobody listening, instead of stalling QEMU (which blocks with its
# big lock held when a chardev does not drain: the whole board would freeze).
STALL_DROP_SECONDS = 2.0


class PtyRelay:
    """pty master <-> the unix socket QEMU connects its chardev to.

    stall_drop: seconds a reader may take nothing before output is dropped (a board UART,
    whose QEMU would otherwise freeze); None never drops (a virtio console, which QEMU
    throttles by itself when the line does not drain)."""

    def __init__(
        self, name: str, sock_path: Path, stall_drop: float | None = STALL_DROP_SECONDS
    ) -> None:
        self.name = name
        self.sock_path = sock_path
        self.stall_drop = stall_drop
        self.master, slave = os.openpty()
        os.fchmod(slave, 0o600)  # openpty gives 0620: the tty group could write to a shell
        self.port = os.ttyname(slave)
        tty.setraw(slave)  # no echo, no CR/LF games: a byte in is a byte out
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        # Keep one slave fd open: the master then never sees a hang-up (EIO) while no client
        # is connected, and the line settings survive ser2net closing and reopening it.
        self._slave = slave
        os.set_blocking(self.master, False)
        sock_path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # bound under a temporary name, made 0600, then renamed into place: the name QEMU
        # connects to is never open to others (a umask would be process-wide)
        tmp = sock_path.with_name(f".{os.getpid()}-{id(self) % 65536:x}")  # short: 108-byte limit
        tmp.unlink(missing_ok=True)
        self.listener.bind(str(tmp))
        os.chmod(tmp, 0o600)
        os.replace(tmp, sock_path)
        self.listener.listen(1)
        self.conn: socket.socket | None = None
        self.dropped = 0
        self._stalled = False
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name=f"pty-{name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            fds: list = [self.listener, self.master]
            if self.conn is not None:
                fds.append(self.conn)
            try:
                ready, _, _ = select.select(fds, [], [], 0.2)
            except (OSError, ValueError):
                return
            for fd in ready:
                if fd is self.listener:
                    conn, _ = self.listener.accept()
                    if self.conn is not None:
                        self.conn.close()
                    self.conn = conn
                elif fd is self.master:
                    self._master_to_qemu()
                elif fd is self.conn:
                    self._qemu_to_master()

    def _master_to_qemu(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno == errno.EIO:
                time.sleep(0.05)
                return
            raise
        if self.conn is None:
            return  # board off: typed characters are lost, as on a real line
        try:
            self.conn.sendall(data)  # blocks while QEMU's UART FIFO is full: back-pressure
        except OSError:
            self._drop_conn()

    def _qemu_to_master(self) -> None:
        assert self.conn is not None
        try:
            data = self.conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop_conn()
            return
        view = memoryview(data)
        # once nobody has drained the line for STALL_DROP_SECONDS, drop at once until it
        # drains again, or every chunk would stall the board for that long
        grace = self.stall_drop
        deadline = time.monotonic() + (0 if self._stalled else grace or 0)
        while view:
            try:
                n = os.write(self.master, view)
                view = view[n:]
                self._stalled = False
                deadline = time.monotonic() + (grace or 0)
            except BlockingIOError:
                if self._stop:
                    return
                if grace is not None and time.monotonic() >= deadline:
                    self.dropped += len(view)
                    self._stalled = True
                    return
                select.select([], [self.master], [], 0.1)

    def _drop_conn(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self._drop_conn()
        self.listener.close()
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.sock_path.unlink(missing_ok=True)
