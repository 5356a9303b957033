"""The project's error types: each carries a message a user can act on without a traceback."""

from __future__ import annotations


class VfioPlatformError(Exception):
    """Base class: the plugin reports these as a clean usage/infrastructure message."""


class SetupError(VfioPlatformError):
    """Something the machine lacks (a tool, a package, a writable directory)."""


class BuildError(VfioPlatformError):
    """A build step failed; the message names the step and where its log is kept."""

    def __init__(self, message: str, log: str | None = None) -> None:
        super().__init__(message + (f"\n  full log: {log}" if log else ""))
        self.log = log


class LabError(VfioPlatformError):
    """A lab definition that does not load or validate; names the file and the key."""


class BoardError(VfioPlatformError):
    """The board did not boot, hung or panicked; the console log is kept."""

    def __init__(self, message: str, console_log: str | None = None) -> None:
        super().__init__(message + (f"\n  console log: {console_log}" if console_log else ""))
        self.console_log = console_log
