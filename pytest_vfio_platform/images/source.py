"""Kernel source trees: where they come from and what identifies their content.

Why content and not paths or mtimes: a cache key must change when any byte of the source
changes and must not change when a file is merely touched or the tree is moved. Hashing 1.4 GB
on every run would cost seconds, so per-file digests are memoised on (size, mtime, inode).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ..errors import BuildError, SetupError
from .cache import ArtifactCache, atomic_write, file_digest

DEBIAN_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
EXCLUDE_DIRS = {".git", ".pc"}


def default_source() -> Path:
    if not DEBIAN_TARBALL.is_file():
        raise SetupError(
            f"kernel source {DEBIAN_TARBALL} not found; install the Debian package "
            "'linux-source-6.12' (ci/setup does) or pass --kernel-src PATH"
        )
    return DEBIAN_TARBALL


def is_tarball(path: Path) -> bool:
    return path.is_file() and any(
        path.name.endswith(s) for s in (".tar", ".tar.xz", ".tar.gz", ".tgz", ".tar.bz2")
    )


def source_digest(path: Path, cache: ArtifactCache) -> str:
    """Content digest of a kernel source: a tarball's bytes, or a directory's files."""
    path = path.resolve()
    if is_tarball(path):
        return _memo_file_digest(path, cache)
    if path.is_dir():
        if not (path / "Makefile").is_file() or not (path / "arch" / "arm64").is_dir():
            raise SetupError(
                f"--kernel-src {path}: not a Linux source tree (no Makefile/arch/arm64)"
            )
        return tree_digest(path, cache)
    raise SetupError(f"--kernel-src {path}: neither a directory nor a .tar[.xz|.gz] tarball")


def _memo_path(cache: ArtifactCache, path: Path) -> Path:
    return cache.root / "memo" / (hashlib.sha256(str(path).encode()).hexdigest()[:24] + ".json")


def _stat_sig(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _memo_file_digest(path: Path, cache: ArtifactCache) -> str:
    memo_file = _memo_path(cache, path)
    sig = _stat_sig(path.stat())
    try:
        memo = json.loads(memo_file.read_text())
        if memo.get("sig") == sig:
            return memo["digest"]
    except (OSError, ValueError):
        pass
    digest = file_digest(path)
    try:
        atomic_write(memo_file, json.dumps({"sig": sig, "digest": digest}).encode())
    except OSError:
        pass  # a read-only cache only costs speed here
    return digest


def tree_manifest(root: Path, cache: ArtifactCache) -> dict[str, str]:
    """Every file but .git, in walk order: relative path -> content digest and executable
    bits ("<sha256>:<mode>"), or "link:<target>" for a symlink. Digests are memoised on
    (size, mtime, inode), so a second call costs one stat per file."""
    memo_file = _memo_path(cache, root)
    try:
        memo: dict[str, list[str]] = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    new_memo: dict[str, list[str]] = {}
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDE_DIRS)
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if os.path.islink(p):
                out[rel] = "link:" + os.readlink(p)
                continue
            sig = _stat_sig(st)
            old = memo.get(rel)
            d = old[1] if old and old[0] == sig else file_digest(Path(p))
            new_memo[rel] = [sig, d]
            out[rel] = f"{d}:{st.st_mode & 0o111}"
    if new_memo != memo:
        try:
            atomic_write(memo_file, json.dumps(new_memo).encode())
        except OSError:
            pass  # a read-only cache only costs speed here
    return out


def tree_digest(root: Path, cache: ArtifactCache) -> str:
    """Digest over (relative path, file digest, executable bit) of every file but .git."""
    return manifest_digest(tree_manifest(root, cache))


def manifest_digest(manifest: dict[str, str]) -> str:
    """tree_digest of the tree a manifest describes."""
    h = hashlib.sha256()
    for rel, entry in manifest.items():
        if entry.startswith("link:"):
            d, mode = entry, str(0o777 & 0o111)  # lstat of a symlink: always rwxrwxrwx
        else:
            d, mode = entry.rsplit(":", 1)
        h.update(f"{rel}\0{d}\0{mode}\n".encode())
    return h.hexdigest()


def pristine_tree(path: Path, digest: str, cache: ArtifactCache) -> Path:
    """A directory holding the unmodified source: the directory itself, or the tarball
    extracted once into the cache (atomically, so a killed extraction is never reused)."""
    path = path.resolve()
    if path.is_dir():
        return path

    def extract(tmp: Path) -> dict:
        tar = shutil.which("tar")
        if tar is None:
            raise SetupError("required tool 'tar' not found; install the Debian package 'tar'")
        with tempfile.TemporaryDirectory(dir=tmp) as x:
            r = subprocess.run([tar, "-xf", str(path), "-C", x], capture_output=True, text=True)
            if r.returncode != 0:
                raise BuildError(f"extracting {path} failed: {r.stderr.strip()[-500:]}")
            top = [p for p in Path(x).iterdir()]
            src = top[0] if len(top) == 1 and top[0].is_dir() else Path(x)
            os.rename(src, tmp / "src")
        return {"tarball": str(path)}

    if not tarfile.is_tarfile(path):
        raise SetupError(f"--kernel-src {path}: not a readable tar archive")
    art = cache.get_or_build("source", digest[:32], extract, {"tarball": str(path)})
    return art / "src"
