"""A content-addressed artifact cache with atomic publication.

Why: kernel and image builds take minutes; their inputs are small and hashable. An artifact is
built in a private temporary directory and renamed into place only when complete, so a killed
or failed build never leaves something that a later run would mistake for a finished artifact.
A per-key lock serialises concurrent builders (two pytest workers asking for the same kernel).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from labgrid.util.atomic import atomic_replace

from ..errors import SetupError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# Below this much free space the cache counts as full: the smallest artifacts (a DTB, an agent)
# fit, but nothing a board boots does, and a build would fail somewhere deep inside.
MIN_FREE_BYTES = 1 << 20

DEFAULT_ROOT = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pytest-vfio-platform"
)


def cache_root() -> Path:
    """The cache directory: $PYTEST_VFIO_PLATFORM_CACHE, else ~/.cache/pytest-vfio-platform."""
    env = os.environ.get("PYTEST_VFIO_PLATFORM_CACHE")
    return Path(env) if env else DEFAULT_ROOT


class Hasher:
    """Builds a cache key from named parts; the names make keys stable and debuggable."""

    def __init__(self, kind: str) -> None:
        self._h = hashlib.sha256()
        self.parts: dict[str, str] = {}
        self.add("kind", kind)

    def add(self, name: str, value: str | bytes) -> Hasher:
        data = value.encode() if isinstance(value, str) else value
        digest = hashlib.sha256(data).hexdigest()
        self.parts[name] = digest[:16]
        self._h.update(name.encode() + b"\0" + digest.encode() + b"\n")
        return self

    def add_file(self, name: str, path: Path) -> Hasher:
        return self.add(name, file_digest(path))

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:32]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ArtifactCache:
    """Directory-per-key store: ROOT/artifacts/<kind>/<key>/ holding files and a manifest."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else cache_root()

    def ensure_writable(self) -> None:
        """Fail early and clearly instead of half-way through a five-minute build.

        A full disk is caught here too (less than MIN_FREE_BYTES free): a probe file costs no
        data blocks, so without the free-space check a full disk would only show up as a
        failing tar or make deep inside a build.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-", delete=True)
            probe.close()
            free = _free_bytes(self.root)
        except OSError as e:
            if e.errno in NO_SPACE:
                raise self._no_space(e) from None
            why = e.strerror or str(e)
            if self.root.exists() and not self.root.is_dir():
                why = "it is a file, not a directory"
            raise SetupError(
                f"cache directory {self.root} is not writable ({why}); "
                "set PYTEST_VFIO_PLATFORM_CACHE or --cache-dir to a writable directory"
            ) from None
        if free < MIN_FREE_BYTES:
            raise self._no_space(None, f"{free // 1024} KiB free")

    def _no_space(
        self, e: OSError | None, what: str = "", kind: str = "", key: str = ""
    ) -> SetupError:
        where = f" while writing {kind} artifact {key}" if kind else ""
        if e is not None and e.filename:
            where += f" ({e.filename})"
        return SetupError(
            f"no space left on the device holding the cache {self.root}{where}"
            f"{'; ' + what if what else ''}; free space or point --cache-dir / "
            "PYTEST_VFIO_PLATFORM_CACHE elsewhere (nothing partial was kept)"
        )

    def path(self, kind: str, key: str) -> Path:
        return self.root / "artifacts" / kind / key

    def lookup(self, kind: str, key: str) -> Path | None:
        """A finished artifact directory, or None. Only complete entries have a manifest."""
        p = self.path(kind, key)
        return p if (p / "manifest.json").is_file() else None

    @contextmanager
    def _lock(self, kind: str, key: str) -> Iterator[None]:
        lockdir = self.root / "locks"
        lockdir.mkdir(parents=True, exist_ok=True)
        with open(lockdir / f"{kind}-{key}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def get_or_build(
        self,
        kind: str,
        key: str,
        build: Callable[[Path], dict],
        inputs: dict[str, str] | None = None,
    ) -> Path:
        """Return the artifact for key, building it with build(tmpdir) on a miss.

        build() fills tmpdir and returns metadata for the manifest. It is renamed into place
        only after returning; on any exception the temporary directory is removed.
        """
        hit = self.lookup(kind, key)
        if hit:
            return hit
        self.ensure_writable()
        try:
            return self._build(kind, key, build, inputs)
        except OSError as e:
            # anywhere from the lock file to the final rename: the disk filled up meanwhile
            if e.errno in NO_SPACE:
                raise self._no_space(e, kind=kind, key=key) from None
            raise

    def _build(
        self, kind: str, key: str, build: Callable[[Path], dict], inputs: dict[str, str] | None
    ) -> Path:
        with self._lock(kind, key):
            hit = self.lookup(kind, key)
            if hit:
                return hit
            final = self.path(kind, key)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=final.parent))
            try:
                meta = build(tmp) or {}
                manifest = {"kind": kind, "key": key, "inputs": inputs or {}, **meta}
                (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
                _fsync_tree(tmp)
                if final.exists():  # an incomplete leftover without manifest
                    shutil.rmtree(final)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return final


def _free_bytes(path: Path) -> int:
    """Bytes this process may still write there (root may use the filesystem's reserve)."""
    st = os.statvfs(path)
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def _fsync_tree(d: Path) -> None:
    for p in d.rglob("*"):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write a file so that readers see the old content or the new, never a torn one
    (labgrid's atomic_replace: a synced temporary file renamed over it). mode: permissions of
    the result (default: the temporary file's 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_replace(str(path), data)
    if mode is not None:
        os.chmod(path, mode)
