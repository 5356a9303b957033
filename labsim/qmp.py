"""The few QMP commands a board host sends its QEMU (button pulses, status, quit), spoken by
labgrid's own QMPMonitor over the host's unix socket.

Why not labgrid's QEMUDriver: on a rack board QEMU belongs to the board host process, not to
the test; the host is the only one speaking QMP. What is added here is only the wait for the
socket (QEMU creates it a moment after it starts) and one error type.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from labgrid.util.qmp import QMPError, QMPMonitor


class QmpError(RuntimeError):
    pass


class Qmp:
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > end:
                    raise QmpError(f"no QMP socket at {path} after {timeout:.0f}s") from None
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        try:
            self.monitor = QMPMonitor(self.file, self.file)  # greeting + qmp_capabilities
        except (QMPError, ValueError, OSError) as e:
            self.close()
            raise QmpError(f"QMP at {path}: {e}") from None

    def command(self, name: str, arguments: dict | None = None) -> object:
        try:
            return self.monitor.execute(name, arguments or {})
        except QMPError as e:
            raise QmpError(f"QMP {name}: {e.msg}") from None
        except TypeError as e:
            # labgrid 26.0.1's QMPError takes only a str and QEMU's error is a dict, so
            # raising it fails its attrs validator; the reply was an error either way
            raise QmpError(f"QMP {name}: QEMU answered with an error ({e})") from None
        except (ValueError, OSError) as e:  # closed socket, half a line
            raise QmpError(f"QMP {name}: {e}") from None

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:  # QEMU already gone: the unflushed command goes nowhere
            pass
        finally:
            self.sock.close()
