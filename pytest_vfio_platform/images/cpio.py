"""Write initramfs archives (cpio "newc") directly, deterministically.

Why not the cpio tool: ownership, mtimes and ordering would leak from the build host into the
archive and so into the cache key of everything built on it; here every entry is root-owned,
dated 0, and sorted.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    path: str  # inside the archive, without leading slash
    mode: int  # full st_mode (type + permissions)
    data: bytes = b""  # file content, or the symlink target


def _header(ino: int, e: Entry, namesize: int, filesize: int) -> bytes:
    fields = [ino, e.mode, 0, 0, 1, 0, filesize, 0, 0, 0, 0, namesize, 0]
    return b"070701" + b"".join(f"{v:08X}".encode() for v in fields)


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def write_cpio(entries: list[Entry], out: Path) -> None:
    """Write entries (parents created implicitly, sorted) as a newc archive."""
    by_path: dict[str, Entry] = {}
    for e in entries:
        parts = e.path.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            by_path.setdefault(d, Entry(d, stat.S_IFDIR | 0o755))
        by_path[e.path.strip("/")] = e
    with open(out, "wb") as f:
        ino = 1
        for path in sorted(by_path):
            e = by_path[path]
            name = path.encode() + b"\0"
            data = e.data if not stat.S_ISDIR(e.mode) else b""
            hdr = _header(ino, e, len(name), len(data))
            f.write(hdr + name + _pad(len(hdr) + len(name)) + data + _pad(len(data)))
            ino += 1
        trailer = Entry("TRAILER!!!", 0)
        name = b"TRAILER!!!\0"
        hdr = _header(0, trailer, len(name), 0)
        f.write(hdr + name + _pad(len(hdr) + len(name)))


def file_entry(path: str, src: Path, mode: int | None = None) -> Entry:
    m = mode if mode is not None else (0o755 if src.stat().st_mode & 0o111 else 0o644)
    return Entry(path, stat.S_IFREG | m, src.read_bytes())


def text_entry(path: str, text: str, mode: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | mode, text.encode())


def symlink_entry(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())
