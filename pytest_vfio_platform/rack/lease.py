"""Hold a place of a labgrid rack for one test session: reserve by tags, wait (saying so)
while the rack is busy, acquire, and release on every way out.

Why a separate reaper process: a run can end in ways that run no Python cleanup — SIGKILL
from a CI timeout, an OOM kill, a crash in native code. labgrid keeps a place acquired until
someone releases it, so such a run would leave a stale lock that blocks the lab for everyone.
The reaper is started in its own session (a process-group kill does not reach it), holds a
pipe from the test process and, when that pipe closes without a "done", releases the place
and cancels the reservation itself.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable

from ..errors import LabError
from .cli import client

WAIT_REPORT_SECONDS = 15.0


class PlaceLease:
    def __init__(
        self, coordinator: str, tags: dict[str, str], say: Callable[[str], None] = print
    ) -> None:
        self.coordinator = coordinator
        self.tags = tags
        self.say = say
        self.token: str | None = None
        self.place: str | None = None
        self._reaper: subprocess.Popen | None = None

    def acquire(self, timeout: float | None = None) -> str:
        """The name of the place now held by this process."""
        try:
            out = client(self.coordinator, "reserve", "--shell", *self._filters(), timeout=30)
        except subprocess.TimeoutExpired:
            raise self._unreachable() from None
        except LabError as e:
            if "connect" in str(e).lower() or "unavailable" in str(e).lower():
                raise self._unreachable() from None
            raise
        self.token = out.strip().split("LG_TOKEN=", 1)[-1].strip()
        self._start_reaper()
        t0 = time.monotonic()
        while True:
            try:
                client(self.coordinator, "wait", self.token, timeout=WAIT_REPORT_SECONDS)
                break
            except subprocess.TimeoutExpired:
                waited = time.monotonic() - t0
                if timeout is not None and waited > timeout:
                    self.release()
                    raise LabError(
                        f"no place with {self._desc()} became free within {timeout:.0f}s "
                        f"at {self.coordinator}; holders:\n{self._who()}"
                    ) from None
                self.say(
                    f"waiting {waited:.0f}s for a place with {self._desc()} at "
                    f"{self.coordinator}: all busy\n{self._who()}"
                )
        client(self.coordinator, "-p", f"+{self.token}", "acquire")
        self.place = self._allocated_place()
        self._tell(f"place {self.place}")
        return self.place

    def release(self) -> None:
        """Give the place back (idempotent); the reaper is told it has nothing left to do."""
        try:
            if self.place is not None:
                client(self.coordinator, "-p", self.place, "release", check=False)
            if self.token is not None:
                client(self.coordinator, "cancel-reservation", self.token, check=False)
        finally:
            self.place = self.token = None
            self._tell("done")
            if self._reaper is not None:
                try:
                    self._reaper.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._reaper.kill()
                self._reaper = None

    # -- internals -------------------------------------------------------------------------
    def _filters(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.tags.items()]

    def _desc(self) -> str:
        return " ".join(self._filters()) or "any tags"

    def _who(self) -> str:
        out = client(self.coordinator, "who", check=False, timeout=30).strip()
        return "\n".join("    " + line for line in out.splitlines()) or "    (nobody?)"

    def _unreachable(self) -> LabError:
        return LabError(
            f"no labgrid coordinator answers at {self.coordinator} (rack.coordinator in the lab "
            "file, or LG_COORDINATOR); for the local rack start it with "
            "`python -m labsim.local up`"
        )

    def _allocated_place(self) -> str:
        out = client(self.coordinator, "-p", f"+{self.token}", "show")
        for line in out.splitlines():
            if line.startswith("Place '"):
                return line.split("'")[1]
        raise LabError(f"labgrid-client show +{self.token}: no place in its output:\n{out}")

    def _start_reaper(self) -> None:
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", __name__, self.coordinator, self.token or ""],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )

    def _tell(self, line: str) -> None:
        if self._reaper is None or self._reaper.stdin is None:
            return
        try:
            self._reaper.stdin.write(line + "\n")
            self._reaper.stdin.flush()
            if line == "done":
                self._reaper.stdin.close()
        except (BrokenPipeError, ValueError):
            pass


def reaper(coordinator: str, token: str) -> int:
    """Wait for the owner's pipe to close; without a 'done' first, undo what it held."""
    place = None
    for line in sys.stdin:
        word, _, arg = line.strip().partition(" ")
        if word == "done":
            return 0
        if word == "place":
            place = arg
    # the owner died holding the lease: leave the board off (as a finished session would)
    # and the place free
    if place:
        client(coordinator, "-p", place, "power", "off", check=False)
        client(coordinator, "-p", place, "release", check=False)
    client(coordinator, "cancel-reservation", token, check=False)
    print(f"reaper {os.getpid()}: released {place or '(none)'} and reservation {token}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="release a place when its owner dies (internal)")
    ap.add_argument("coordinator")
    ap.add_argument("token")
    a = ap.parse_args(argv)
    return reaper(a.coordinator, a.token)


if __name__ == "__main__":
    sys.exit(main())
