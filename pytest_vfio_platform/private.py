"""Directories and files only this user can touch, on a host other users share.

Why: the rack's and the runs' state lives under predictable names (/tmp/vfio-rack-$UID), and
the lab side runs as root. A directory another user made first, or a symlink planted where a
file will be written, would hand them file writes as root or feed us their pids and
endpoints. So a private directory is created 0700 or, if it exists, accepted only as a real
directory owned by us that nobody else can write; a file at a predictable name is created
with O_EXCL|O_NOFOLLOW (never through a symlink, never someone else's).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import SetupError


def private_dir(path: Path) -> Path:
    """path as a directory of ours, mode 0700 (created so if missing); SetupError naming
    what is wrong with it otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    why = None
    if stat.S_ISLNK(st.st_mode):
        why = "is a symlink"
    elif not stat.S_ISDIR(st.st_mode):
        why = "is not a directory"
    elif st.st_uid != os.getuid():
        why = f"belongs to uid {st.st_uid}, not to us (uid {os.getuid()})"
    elif st.st_mode & 0o077:
        why = f"is open to others (mode {stat.S_IMODE(st.st_mode):o})"
    if why:
        raise SetupError(
            f"{path} {why}: refusing to keep private state there (someone may have made it "
            "to take over this rack or run); remove it or choose another directory"
        )
    return path


def create_private(path: Path, mode: int = 0o600) -> int:
    """A new file at path, ours alone: fails (FileExistsError) on anything already there,
    a planted symlink included. Returns the fd, opened for writing."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
