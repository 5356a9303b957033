"""run(cmd) -> (rc, output) over a serial console that may drop, duplicate or garble bytes,
or interleave kernel messages with the output — and never return a wrong answer.

Why not labgrid's ShellDriver.run alone: it trusts the line. A dropped byte in a marker makes
it wait out its whole timeout and the board looks hung; a garbled byte in the output is
returned as if the board had printed it. Here the board checksums what the command printed
(md5 over output + exit code: busybox has md5sum, not cksum) and the host verifies it. The command runs once, with
its output and exit code kept in files on the board; when what arrived does not verify, only
the *reading back* is repeated (idempotent), a bounded number of times, and then it fails with
ConsoleGarbled. A board that answers nothing at all is a hang (BoardError).
"""

from __future__ import annotations

import hashlib
import re
import shlex
import time
from dataclasses import dataclass

from labgrid.util import gen_marker
from pexpect import TIMEOUT

from .errors import BoardError

FETCH_TIMEOUT = 5.0
# The tty's canonical line buffer (N_TTY_BUF_SIZE 4096, newline included): a longer line is
# cut there and the shell waits for the rest of a quote that never comes — a board "hung"
# on a command it never received.
MAX_LINE = 4095
MAX_FETCHES = 6
# A kernel message the console printed into the middle of the command's output (printk
# writes whole lines, timestamped with printk.time=1, between the tty's characters).
KMSG = re.compile(r"\[\s*\d+\.\d{6}\] [^\r\n]*\r\n")
TRAILER = re.compile(r"@@vr (\d+) (-?\d+) ([0-9a-f]{32})\s+-$")


class ConsoleGarbled(BoardError):
    """The board answered, but what came over the console never verified."""


@dataclass
class RunResult:
    rc: int
    out: str


class CheckedShell:
    """A verified run() on top of a labgrid shell (its prompt and its `run` shell function)."""

    def __init__(self, tmp: str = "/tmp/.vr") -> None:
        self.out_file, self.rc_file = f"{tmp}.o", f"{tmp}.rc"
        self.nonce = 0
        self.stats = {"runs": 0, "refetches": 0, "garbled": 0, "hangs": 0}

    def _fetch_cmd(self) -> str:
        o, rc = self.out_file, self.rc_file
        return (
            f'r=$(cat {rc} 2>/dev/null) && cat {o} && printf "\\n@@vr %s %s\\n" "$r" '
            f'"$({{ cat {o}; echo "rc=$r"; }} | md5sum)"'
        )

    def run(self, console, prompt: str, cmd: str, timeout: float, where: str) -> RunResult:  # noqa: ANN001 - labgrid console
        """Run cmd once on the board; where names the console log for errors."""
        self.nonce += 1
        self.stats["runs"] += 1
        n = self.nonce
        # ( ) keeps an `exit` in cmd from skipping the bookkeeping; sh -c (labgrid's run)
        # already isolates shell state between commands. The newline before `)` ends a
        # here-document or a comment that ends cmd (on the same line as `)`, a heredoc's
        # terminator is not one, and the rest of the bookkeeping would be its body).
        wrapped = (
            f"rm -f {self.rc_file}; ( {cmd}\n) >{self.out_file} 2>&1; "
            f'echo "{n} $?" >{self.rc_file}; {self._fetch_cmd()}'
        )
        answer = self._send(console, prompt, wrapped, timeout)
        silent = 0 if answer is not None else 1
        for attempt in range(MAX_FETCHES):
            if answer is not None:
                res = self._verify(answer, n)
                if res is not None:
                    return res
                self.stats["garbled"] += 1
            if silent >= 2:
                self.stats["hangs"] += 1
                raise BoardError(
                    f"board hung running {cmd!r}: no answer within {timeout:.0f}s, nor to "
                    f"{silent - 1} read-back(s) of {FETCH_TIMEOUT:.0f}s",
                    where,
                )
            self.stats["refetches"] += 1
            time.sleep(min(0.2 * 2**attempt, 2.0))  # let a burst on the line pass
            answer = self._send(console, prompt, self._fetch_cmd(), FETCH_TIMEOUT)
            silent = silent + 1 if answer is None else 0
        raise ConsoleGarbled(
            f"console garbled running {cmd!r}: the output did not verify after "
            f"{MAX_FETCHES} read-backs (noise, dropped bytes or kernel messages on the line)",
            where,
        )

    @staticmethod
    def _send(console, prompt: str, cmd: str, timeout: float) -> str | None:  # noqa: ANN001
        """The text between this exchange's run markers; "" when this exchange's prompt came
        back with one of its markers broken (garbled); None when neither came back in time.

        Every pattern is anchored on this exchange's own marker. A bare prompt is never
        taken as the end of an answer: a prompt left over from an earlier exchange (a
        command that outlived its timeout, a read-back that raced a late answer, an extra
        newline) would then end this exchange before its answer arrived, and every later
        exchange would be one prompt behind for good. Whatever an earlier exchange left on
        the line sits before this exchange's first marker and is skipped with it."""
        marker = gen_marker()
        line = f"MARKER='{marker[:4]}''{marker[4:]}' run {shlex.quote(cmd)}"
        longest = max(len(x.encode()) for x in line.split("\n"))
        if longest > MAX_LINE:
            raise ValueError(
                f"a command line of {longest} bytes does not fit the console tty's "
                f"{MAX_LINE}-byte line; write it to a script on the board first: {cmd[:120]!r}..."
            )
        console.sendline(line)
        # a tie on the start goes to the first pattern: the whole answer wins over the
        # partial one whenever both markers are intact
        answer = rf"{marker}(.*){marker}\s+(\d+)\s+{prompt}"
        partial = rf"{marker}.*?{prompt}"  # one marker broken: first or second
        try:
            index, _, match, _ = console.expect([answer, partial], timeout=timeout)
        except TIMEOUT:
            return None
        if index != 0:
            return ""
        return match.group(1).decode("utf-8", "replace")

    @classmethod
    def _verify(cls, text: str, nonce: int) -> RunResult | None:
        """The answer if text verifies as sent, or once kernel messages are taken out."""
        res = cls._verify_one(text, nonce)
        if res is None and KMSG.search(text):
            res = cls._verify_one(KMSG.sub("", text), nonce)
        return res

    @staticmethod
    def _verify_one(text: str, nonce: int) -> RunResult | None:
        body, sep, last = text.replace("\r\n", "\n").rstrip("\n").rpartition("\n@@vr ")
        if not sep:
            return None
        m = TRAILER.match("@@vr " + last)
        if m is None or int(m.group(1)) != nonce:
            return None
        rc = int(m.group(2))
        if hashlib.md5(f"{body}rc={nonce} {rc}\n".encode()).hexdigest() != m.group(3):
            return None
        return RunResult(rc, body[:-1] if body.endswith("\n") else body)
