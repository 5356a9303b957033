"""One pytest session's hold on a lab: the board, the boot files per variant, and the
evidence each test leaves behind.

Why memoise failures: a kernel that does not build or a board that does not boot would
otherwise be retried by every test, turning one clear error into an hour of the same error.
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from .board import Board
from .boards import new_board
from .console import read_from
from .errors import BoardError, VfioPlatformError
from .images.cache import ArtifactCache
from .images.progress import stderr_progress
from .lab import Lab
from .provision import BootFiles, KernelChoice, boot_files

BOOT_ATTEMPTS = 2


class LabSession:
    def __init__(self, lab: Lab, choice: KernelChoice, rundir: Path, cache: ArtifactCache) -> None:
        self.lab = lab
        self.choice = choice
        self.rundir = rundir
        self.cache = cache
        self._files: dict[str, BootFiles] = {}
        self._failed: dict[str, VfioPlatformError] = {}
        self._board: Board | None = None
        self._boot_failed: dict[str, tuple[int, BoardError]] = {}
        self.say = print  # the plugin routes this to the terminal (waiting for a place, ...)

    def files(self, variant: str) -> BootFiles:
        if variant in self._failed:
            raise self._failed[variant]
        if variant not in self._files:
            try:
                self._files[variant] = boot_files(
                    self.lab, variant, self.choice, self.cache, stderr_progress
                )
            except VfioPlatformError as e:
                self._failed[variant] = e
                raise
        return self._files[variant]

    def board(self, variant: str = "default") -> Board:
        files = self.files(variant)
        if self._board is None:
            self._board = self._new_board()
        if self._boot_failed.get(variant, (0, None))[0] >= BOOT_ATTEMPTS:
            raise self._boot_failed[variant][1]
        try:
            self._board.ensure(files)
        except BoardError as e:
            # a board that will not boot would cost every remaining test a full login
            # timeout; after BOOT_ATTEMPTS the same error is reported at once
            n = self._boot_failed.get(variant, (0, None))[0] + 1
            self._boot_failed[variant] = (n, e)
            raise
        self._boot_failed.pop(variant, None)
        return self._board

    def _new_board(self) -> Board:
        return new_board(self.lab, self.rundir, say=self.say)

    def booted_files(self) -> list[BootFiles]:
        return list(self._files.values())

    def boards_used(self) -> list[str]:
        return [self._board.name()] if self._board is not None else []

    def close(self) -> None:
        """Power the board off and make sure nothing this session started keeps running."""
        if self._board is not None:
            self._board.close()
            self._board = None
        for pid, args in processes_naming(self.rundir, "qemu-system"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.say(f"killed a process left behind by this session: {pid} {args[:120]}")


def names_path(args: list[str], path: Path) -> bool:
    """Whether a command line names path as a whole path: an argument, or a field of one
    (QEMU's `unix:PATH,server=on`, `file=PATH`), equal to path or below it. A substring
    match would take worker gw1's run directory for a prefix of gw10's."""
    want = str(path).rstrip("/")
    for a in args:
        for field in re.split(r"[,:=]", a):
            if field == want or field.startswith(want + "/"):
                return True
    return False


def processes_naming(path: Path, program: str) -> list[tuple[int, str]]:
    """This user's processes running program whose command line names path (QEMU's sockets
    live in the run directory, so this finds a session's boards and nothing of anybody
    else's — nor the `timeout`/shell that started pytest with --run-dir on its own command
    line, nor another user's process that names the same path)."""
    found = []
    uid = os.getuid()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = [
                a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0")
            ]
            owner = proc.stat().st_uid
        except OSError:
            continue
        if owner != uid or not argv or not Path(argv[0]).name.startswith(program):
            continue
        if names_path(argv, path):
            found.append((int(proc.name), " ".join(argv)))
    return found


@dataclass
class TestEvidence:
    """What a test saw: console bytes, new kernel messages, taint before and after."""

    nodeid: str
    console_offset: int
    dmesg_lines: int
    taint_before: int
    taint_after: int | None = None
    board: Board | None = None
    board_log: str = ""
    guest_offset: int = 0

    @classmethod
    def start(cls, board: Board, nodeid: str) -> TestEvidence:
        if board.recorder:
            board.recorder.mark(f"test {nodeid}")
        n = int(board.check("dmesg | wc -l").strip())
        offset = board.recorder.offset() if board.recorder else 0
        glog = board.rundir / "guest-console.log"
        goff = glog.stat().st_size if glog.exists() else 0
        return cls(
            nodeid,
            offset,
            n,
            board.taint(),
            board=board,
            board_log=str(board.console_log),
            guest_offset=goff,
        )

    def finish(self, board: Board) -> None:
        if board.needs_reboot or board.target is None:
            return
        try:
            self.taint_after = board.taint()
        except (BoardError, AssertionError):
            board.needs_reboot = True
            return
        if self.taint_after != self.taint_before and board.recorder:
            board.recorder.mark(
                f"taint changed during {self.nodeid}: {self.taint_before} -> {self.taint_after}"
            )

    def dmesg_now(self) -> str:
        """Kernel messages since the test started (empty if the board cannot answer)."""
        b = self.board
        if b is None or b.needs_reboot or b.target is None:
            return ""
        try:
            return b.check(f"dmesg | tail -n +{self.dmesg_lines + 1}", timeout=10)
        except (BoardError, AssertionError):
            return ""

    def guest_console_text(self) -> str:
        if self.board is None:
            return ""
        return read_from(self.board.rundir / "guest-console.log", self.guest_offset).decode(
            errors="replace"
        )

    def console_text(self) -> str:
        """The console from the test's start until now (the recorder survives reboots)."""
        if self.board is None:
            return ""
        return self.board.console_since(self.console_offset).decode(errors="replace")
