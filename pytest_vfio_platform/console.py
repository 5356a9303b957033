"""Record everything a board's console printed, and classify trouble seen in it.

Why a recorder beside labgrid: labgrid's expect buffer forgets what it consumed, but a failed
test needs the console for its whole duration, and a hung board needs the panic that preceded
the hang. Subscribing to labgrid's console `read` steps sees every byte without a second
reader on the socket.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from labgrid.step import steps

PANIC_RE = re.compile(
    rb"(Kernel panic - not syncing[^\r\n]*|Internal error: Oops[^\r\n]*|"
    rb"Unable to handle kernel [^\r\n]*|BUG: [^\r\n]*|WARNING: CPU: [^\r\n]*)"
)


# A board that prints without end (a printk storm, a console loop) must not fill the disk of
# a shared host: past this, one marker line and nothing more. Far above any real run (a whole
# ci/test writes a few MiB of console per board).
CONSOLE_LOG_LIMIT = 64 << 20


class ConsoleRecorder:
    """Appends every console read of one labgrid driver to a log file; offsets slice it."""

    def __init__(self, path: Path, source: object, limit: int = CONSOLE_LOG_LIMIT) -> None:
        self.path = path
        self.source = source
        self.limit = limit
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "ab", buffering=0)
        self._size = self._f.tell()
        self._capped = False
        self._lock = threading.Lock()
        steps.subscribe(self._notify)

    def _notify(self, event) -> None:  # noqa: ANN001 - labgrid StepEvent
        step = event.step
        if step.tag != "console" or step.title != "read" or step.source is not self.source:
            return
        # a read that timed out carries the exception as its result: nothing was read
        if event.data.get("state") == "stop" and isinstance(step.result, bytes | bytearray):
            self.write(bytes(step.result))

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._capped:
                return
            if self._size + len(data) > self.limit:
                data = data[: max(0, self.limit - self._size)]
                data += f"\n===== console log capped at {self.limit} bytes =====\n".encode()
                self._capped = True
            self._f.write(data)
            self._size += len(data)

    def mark(self, text: str) -> None:
        self.write(f"\n===== {text} =====\n".encode())

    def offset(self) -> int:
        with self._lock:
            return self.path.stat().st_size

    def since(self, offset: int) -> bytes:
        return read_from(self.path, offset)

    def close(self) -> None:
        steps.unsubscribe(self._notify)
        self._f.close()


def read_from(path: Path, offset: int) -> bytes:
    """A console log from offset on (empty if the log does not exist yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


def find_crash(text: bytes) -> str | None:
    """The first kernel crash line in text (panic, oops, BUG, WARNING), if any."""
    m = PANIC_RE.search(text)
    return m.group(1).decode(errors="replace").strip() if m else None
