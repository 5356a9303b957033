"""The verified run() against a real shell on a pty, in the shapes a guest console takes:
a terminal query (busybox ash's ESC[6n) after every prompt, answers split across many small
reads, empty outputs, and prompts left over from earlier exchanges (a command that outlived
its timeout, an extra newline). An answer the shell printed intact must be accepted.

The shell is the host's /bin/sh on a pseudo-terminal (the line discipline echoes, as the
board's tty does), read through labgrid's own expect wrapper — only the board is missing.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time

import pytest
from labgrid.util import PtxExpect
from pexpect import TIMEOUT

from pytest_vfio_platform import shellrun
from pytest_vfio_platform.errors import BoardError
from pytest_vfio_platform.images.initramfs import GUEST_PROMPT
from pytest_vfio_platform.shellrun import CheckedShell

RUN_FN = """run() { echo -n "$MARKER"; sh -c "$@"; echo "$MARKER $?"; }"""


class PtyShell:
    """A labgrid-shaped console (read/write/sendline/expect) on a real interactive shell.
    chunk bounds each read, so answers arrive split across reads as on a slow serial line."""

    def __init__(self, prompt: str, chunk: int = 7) -> None:
        self.chunk = chunk
        master, slave = pty.openpty()
        env = {"PS1": prompt, "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
        self.proc = subprocess.Popen(
            ["/bin/sh", "-i"], stdin=slave, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        self.fd = master
        self._expect = PtxExpect(self)
        # in step, as labgrid's ShellDriver leaves it: everything up to the last prompt read
        self.sendline(RUN_FN + "; echo 'in''-step'")
        self.expect([rf"in-step\s+{GUEST_PROMPT}"], timeout=10)

    def read(self, size: int = 1, timeout: float = 0.0, max_size: int | None = None) -> bytes:
        if not select.select([self.fd], [], [], timeout)[0]:
            raise TIMEOUT(f"nothing within {timeout}s")
        return os.read(self.fd, min(self.chunk, max_size or self.chunk))

    def write(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def sendline(self, line: str) -> None:
        self._expect.sendline(line)

    def expect(self, pattern, timeout: float = -1):  # noqa: ANN001, ANN201 - labgrid's shape
        index = self._expect.expect(pattern, timeout=timeout)
        return index, self._expect.before, self._expect.match, self._expect.after

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.fd)


@pytest.fixture
def sh():
    # busybox ash asks the terminal where its cursor is after every prompt; nobody answers
    s = PtyShell(GUEST_PROMPT + "\x1b[6n")
    yield s
    s.close()


def run(sh: PtyShell, cmd: str, timeout: float = 5.0) -> shellrun.RunResult:
    return CheckedShell(tmp=f"/tmp/.vr-test-{os.getpid()}").run(
        sh, GUEST_PROMPT, cmd, timeout, "pty"
    )


def test_answers_through_terminal_queries_and_split_reads(sh):
    checked = CheckedShell(tmp=f"/tmp/.vr-test-{os.getpid()}")
    for cmd, want in [("echo hello", (0, "hello")), ("true", (0, "")), ("exit 3", (3, ""))]:
        r = checked.run(sh, GUEST_PROMPT, cmd, 5.0, "pty")
        assert (r.rc, r.out) == want, cmd
    assert checked.stats["refetches"] == 0


def test_stale_prompts_before_the_answer_do_not_shift_every_later_exchange(sh):
    """Two extra newlines leave two prompts on the line that nobody read. The old matcher
    took the first of them for the end of the next answer, and from then on each exchange
    consumed the previous one's prompt: ConsoleGarbled on every command, for ever."""
    sh.sendline("")
    sh.sendline("")
    time.sleep(0.3)
    checked = CheckedShell(tmp=f"/tmp/.vr-test-{os.getpid()}")
    for i in range(5):
        r = checked.run(sh, GUEST_PROMPT, f"echo n{i}", 5.0, "pty")
        assert (r.rc, r.out) == (0, f"n{i}")
    assert checked.stats["garbled"] == 0


def test_a_command_that_outlives_its_timeout_is_read_back(sh, monkeypatch):
    """The answer to the command and the prompts of the read-backs sent while it ran all
    arrive late, in one burst: the read-back's own answer is the one to take."""
    monkeypatch.setattr(shellrun, "FETCH_TIMEOUT", 3.0)
    r = run(sh, "sleep 1.5; echo late", timeout=0.5)
    assert (r.rc, r.out) == (0, "late")
    assert run(sh, "echo next").out == "next"


def test_after_a_hang_the_next_command_is_answered(sh, monkeypatch):
    """A command that outlives its timeout and both read-backs is a hang; when the shell
    comes back, its stale answers must not be taken for the next command's."""
    monkeypatch.setattr(shellrun, "FETCH_TIMEOUT", 0.3)
    with pytest.raises(BoardError, match="hung"):
        run(sh, "sleep 2; echo late", timeout=0.3)
    time.sleep(2.0)
    for i in range(3):
        assert run(sh, f"echo after-{i}").out == f"after-{i}"


def test_a_line_longer_than_the_tty_takes_is_refused_before_sending(sh):
    """The tty cuts a line at 4095 bytes: sent anyway, the shell waits for the rest of the
    quote and the board looks hung (seen with three vfio-platform devices on one QEMU
    command line in the raw-chain benchmark). Refused with a message, nothing sent."""
    sent = []
    real_sendline = sh.sendline
    sh.sendline = lambda line: (
        sent.append(len(line.split("\n")[0])),  # the line that holds cmd
        real_sendline(line),
    )
    run(sh, "true")
    n = shellrun.MAX_LINE - sent[0] + len("true") - len("echo ")  # the line at the limit
    fits = run(sh, "echo " + "x" * n)
    assert sent[1] == shellrun.MAX_LINE
    assert fits.rc == 0 and fits.out == "x" * n
    with pytest.raises(ValueError, match="does not fit the console tty"):
        run(sh, "echo " + "x" * (n + 1))
    assert len(sent) == 2, "a refused line must not be sent"
    assert run(sh, "echo still-in-step").out == "still-in-step"


def test_a_command_ending_in_a_here_document_or_a_comment_runs(sh):
    """`cat > f <<'EOF'\\n...\\nEOF` as the whole command: the terminator must be a line of
    its own, not followed by the bookkeeping's `)` (which made every read-back fail)."""
    f = f"/tmp/.vr-heredoc-{os.getpid()}"
    try:
        assert run(sh, f"cat > {f} <<'X_EOF'\na b\n$c\nX_EOF").rc == 0
        assert run(sh, f"cat {f}").out == "a b\n$c"
        assert run(sh, "echo yes # a comment at the end").out == "yes"
    finally:
        os.unlink(f)
