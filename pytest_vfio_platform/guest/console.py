"""The L2 guest's console as a labgrid target of its own (SerialDriver on whatever port
reaches it + ShellDriver), with the verified run() of shellrun on top.

Why apart from the board: the guest is another machine with its own shell, prompt and
lifetime (it restarts under the same board); detach/attach around each restart keep a stale
prompt of the previous guest from being taken for the new one's.
"""

from __future__ import annotations

import time
from pathlib import Path

from pexpect import TIMEOUT, ExceptionPexpect

from ..console import ConsoleRecorder
from ..errors import BoardError
from ..images.initramfs import GUEST_PROMPT
from ..shellrun import CheckedShell, ConsoleGarbled, RunResult


class GuestConsole:
    """run(cmd) on the guest's shell; detach/attach around guest restarts so a stale prompt
    of the previous guest is never taken for the new one's."""

    BANNER = "vfio-guest: init done"

    def __init__(self, target, log: Path) -> None:  # noqa: ANN001 - labgrid Target
        self.target = target
        self.serial = target.get_driver("SerialDriver")
        self.recorder = ConsoleRecorder(log, self.serial)
        self.log = log
        self.checked = CheckedShell()

    def detach_shell(self) -> None:
        shell = self.target.get_driver("ShellDriver", activate=False)
        self.target.deactivate(shell)
        try:  # drop whatever the previous guest left unread
            while self.serial.read(size=4096, timeout=0.05):
                pass
        except TIMEOUT:
            pass

    def attach_shell(self, timeout: float) -> float:
        """Wait for the guest init's banner, then take its shell; returns when (monotonic)
        the banner came, so a caller can tell the guest's boot from the shell's activation."""
        try:
            self.serial.expect(self.BANNER, timeout=timeout)
            banner = time.monotonic()
            self.target.activate(self.target.get_driver("ShellDriver", activate=False))
            return banner
        except TIMEOUT:
            text = self.log.read_bytes()[-600:].decode(errors="replace")
            raise BoardError(
                f"the guest did not reach a shell within {timeout:.0f}s; guest console: {text!r}",
                str(self.log),
            ) from None

    def run(self, cmd: str, timeout: float = 30.0) -> RunResult:
        """As Board.run, verified end to end, on the guest's console."""
        shell = self.target.get_driver("ShellDriver")
        try:
            return self.checked.run(shell.console, shell.prompt, cmd, timeout, str(self.log))
        except ConsoleGarbled:
            raise
        except (BoardError, OSError, ExceptionPexpect) as e:
            why = "" if isinstance(e, BoardError) else f" (its console failed: {e})"
            raise BoardError(f"guest hung running {cmd!r}{why}", str(self.log)) from None

    def wait_for(self, cmd: str, timeout: float) -> RunResult:
        """Run cmd until it exits 0 or timeout passes, riding out a guest too busy to answer
        its console for a while (an interrupt-heavy transfer): a missed answer is retried,
        the shell resynchronises on a fresh marker."""
        end = time.monotonic() + timeout
        last: RunResult | None = None
        while time.monotonic() < end:
            try:
                last = self.run(cmd, timeout=min(60.0, max(5.0, end - time.monotonic())))
                if last.rc == 0:
                    return last
            except BoardError:
                pass
            time.sleep(1)
        raise BoardError(
            f"guest: {cmd!r} did not succeed within {timeout:.0f}s (last: {last})", str(self.log)
        )

    def close(self) -> None:
        self.recorder.close()
        try:
            self.target.deactivate_all_drivers()
        except Exception:  # noqa: BLE001 - the board is going away anyway
            pass


def guest_target(resources: dict) -> dict:
    """The labgrid target of the L2 guest's console: whatever serial port reaches it, plus a
    shell on it."""
    return {
        "resources": resources,
        "drivers": {
            "SerialDriver": {},
            "ShellDriver": {
                "prompt": GUEST_PROMPT,
                "login_prompt": " login: ",
                "username": "root",
                "login_timeout": 60,
                "await_login_timeout": 1,
            },
        },
    }
