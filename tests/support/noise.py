"""Line faults for the fault suite: a console wrapper that drops, duplicates and injects
bytes, or splices kernel-message lines into what the board prints.

Why a wrapper over the real console and not a fake one: the board, its shell, labgrid's
expect machinery and the verified run (shellrun) all stay real; only the wire misbehaves,
at byte offsets a test (or hypothesis) chooses, so every case is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labgrid.util import PtxExpect

KINDS = ("drop", "dup", "noise", "kmsg", "flip")


@dataclass(frozen=True)
class Fault:
    kind: str  # one of KINDS
    offset: int  # byte offset in what the board sends after arming
    size: int = 1  # bytes dropped/duplicated/injected (noise)


@dataclass
class FaultyConsole:
    """Stands in for a labgrid ConsoleProtocol driver (read/write/sendline/expect)."""

    inner: object
    faults: list[Fault] = field(default_factory=list)
    seen: int = 0  # bytes received since arming

    def __post_init__(self) -> None:
        self._expect = PtxExpect(self)
        self._pending = sorted(self.faults, key=lambda f: f.offset)
        self._done: list[Fault] = []

    def arm(self, faults: list[Fault]) -> None:
        self._pending = sorted(faults, key=lambda f: f.offset)
        self._done = []
        self.seen = 0

    def applied_faults(self) -> list[Fault]:
        """The faults that hit the traffic since arming (a fault past its end never did)."""
        return list(self._done)

    def read(self, size: int = 1, timeout: float = 0.0, max_size: int | None = None) -> bytes:
        data = self.inner.read(size=size, timeout=timeout, max_size=max_size)
        return self._mangle(data)

    def _mangle(self, data: bytes) -> bytes:
        out = bytearray()
        i = 0
        while i < len(data):
            pos = self.seen + i
            if self._pending and self._pending[0].offset <= pos:
                f = self._pending.pop(0)
                self._done.append(f)
                if f.kind == "drop":
                    i += f.size
                    continue
                if f.kind == "dup":
                    out += data[i : i + f.size] * 2
                    i += f.size
                    continue
                if f.kind == "flip":
                    out.append(data[i] ^ 0x20)
                    i += 1
                    continue
                if f.kind == "noise":
                    out += bytes((0x21 + (pos * 7 + k * 13) % 94) for k in range(f.size))
                elif f.kind == "kmsg":
                    out += (
                        f"\r\n[ {pos % 1000:4d}.{pos:06d}] vfio-noise: injected line\r\n".encode()
                    )
                continue
            out.append(data[i])
            i += 1
        self.seen += len(data)
        return bytes(out)

    def write(self, data: bytes) -> int:
        return self.inner.write(data)

    def sendline(self, line: str) -> None:
        self._expect.sendline(line)

    def expect(self, pattern, timeout: float = -1):  # noqa: ANN001, ANN201 - labgrid's shape
        index = self._expect.expect(pattern, timeout=timeout)
        return index, self._expect.before, self._expect.match, self._expect.after
