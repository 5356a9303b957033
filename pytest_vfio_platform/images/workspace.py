"""Keep a kernel build workspace equal to (pristine source + a patch series), rewriting only
the files that differ.

Why not rsync on every build: rsync walks and compares the 80k files on both sides, which was
most of a one-line rebuild (23 s against 3.4 s for make alone). The workspace instead keeps a
record of what it holds — the manifest of the source it was synced from and the files the last
series touched — so the next build restores only the files whose content differs and applies
its series. A file that ends up with the bytes it had before keeps its old mtime, so make
rebuilds only what really changed: a mutant that edits one .c recompiles one .c.

A workspace without a record (new, or a build killed between sync and patch) is synced in
full with rsync; the record is removed before any change and written only once the series
applied, so a half-prepared tree is never taken for a known one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import BuildError
from .cache import atomic_write
from .tools import require

RECORD = ".vfio-sync.json"


def full_sync(pristine: Path, tree: Path, log: Path, keep: str) -> None:
    """Make tree equal to pristine (but the build directory keep). Without -t (times):
    every file rsync rewrites is written now, so make never misses a reverted file, also
    when a sync was killed half-way (a file rewritten with pristine's old mtime would then
    pass rsync's size+mtime check next time and keep its stale object for good)."""
    rsync = require("rsync")
    tree.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [
            rsync,
            "-rlpD",  # -a without -t (times) and without -go (owners: ours anyway)
            "--ignore-times",  # a file left with pristine's mtime by an older sync is redone
            "--delete",
            "--exclude=/.git",
            f"--exclude=/{keep}",
            f"--exclude=/{RECORD}",
            f"{pristine}/",
            f"{tree}/",
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise BuildError(
            f"copying the kernel source into {tree} failed: {r.stderr[-500:]}", str(log)
        )


def _load_record(tree: Path) -> dict | None:
    try:
        rec = json.loads((tree / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("manifest"), dict):
        return None
    if not isinstance(rec.get("touched"), list):
        return None
    return rec


def _restore(pristine: Path, tree: Path, rel: str, entry: str | None) -> None:
    """tree/rel as pristine has it (entry is its manifest entry), or gone if entry is None."""
    dst = tree / rel
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    if entry is None:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    src = pristine / rel
    if entry.startswith("link:"):
        os.symlink(entry[len("link:") :], dst)
        return
    shutil.copyfile(src, dst)  # a new write: mtime now, never pristine's old one
    os.chmod(dst, 0o644 | (os.stat(src).st_mode & 0o111))


def prepare(
    pristine: Path,
    manifest: dict[str, str],
    tree: Path,
    apply: Callable[[Path], list[str]],
    log: Path,
    keep: str,
) -> int:
    """Bring tree to pristine (described by manifest) plus the series that apply(tree)
    applies; returns how many files were rewritten (all of them: -1)."""
    rec = _load_record(tree) if tree.is_dir() else None
    (tree / RECORD).unlink(missing_ok=True)
    saved: dict[str, tuple[bytes, int]] = {}
    if rec is None:
        full_sync(pristine, tree, log, keep)
        dirty: set[str] = set()
    else:
        old = rec["manifest"]
        dirty = {rel for rel, e in manifest.items() if old.get(rel) != e}
        dirty |= set(rec["touched"]) | (set(old) - set(manifest))
        for rel in dirty:
            p = tree / rel
            if p.is_file() and not p.is_symlink():
                saved[rel] = (p.read_bytes(), p.stat().st_mtime_ns)
            _restore(pristine, tree, rel, manifest.get(rel))
    touched = apply(tree)
    # a file back to the bytes it had keeps its mtime; anything else is new to make
    now = time.time_ns()
    for rel in dirty | set(touched):
        p = tree / rel
        if not p.is_file() or p.is_symlink():
            continue
        before = saved.get(rel)
        if before is not None and p.read_bytes() == before[0]:
            os.utime(p, ns=(before[1], before[1]))
        else:
            os.utime(p, ns=(now, now))
    atomic_write(tree / RECORD, json.dumps({"manifest": manifest, "touched": touched}).encode())
    return -1 if rec is None else len(dirty)
