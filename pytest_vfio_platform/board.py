"""A booted board: labgrid drives it (QEMUDriver + ShellDriver + VfioBoardStrategy); this
module gives tests `run(cmd) -> (rc, out)`, dmesg, taint, QMP, and crash/hang handling.

Why a facade over labgrid's target: tests need one object that survives reboots into other
DT variants or kernels (each is a new labgrid environment, since QEMUDriver fixes its command
line on activation), keeps one console log across all of them, and turns a hung or panicked
board into a BoardError that names the console log instead of a pexpect traceback.
"""

from __future__ import annotations

import enum
import json
import re
import shlex
import socket
import time
from collections.abc import Callable
from pathlib import Path

import attr
import yaml
from labgrid import Environment
from labgrid.factory import target_factory
from labgrid.step import step
from labgrid.strategy import Strategy, StrategyError, never_retry
from pexpect import ExceptionPexpect

from .console import ConsoleRecorder, find_crash, read_from
from .errors import BoardError
from .guest.console import GuestConsole, guest_target
from .lab import Lab
from .provision import BootFiles
from .ptyrelay import PtyRelay
from .shellrun import CheckedShell, ConsoleGarbled, RunResult
from .stimulus import UartPeer


class Status(enum.Enum):
    unknown = 0
    off = 1
    shell = 2


@target_factory.reg_driver
@attr.s(eq=False)
class VfioBoardStrategy(Strategy):
    """off -> shell: power on (QEMU starts / a board boots), wait for the shell prompt."""

    bindings = {"power": "PowerProtocol", "console": "ConsoleProtocol", "shell": "ShellDriver"}
    status = attr.ib(default=Status.unknown)

    @never_retry
    @step(args=["status"])
    def transition(self, status, *, step):  # noqa: ANN001 - labgrid's signature
        if not isinstance(status, Status):
            status = Status[status]
        if status == Status.unknown:
            raise StrategyError(f"can not transition to {status}")
        if status == self.status:
            step.skip("nothing to do")
            return
        if status == Status.off:
            self.target.deactivate(self.shell)
            self.target.activate(self.power)
            self.power.off()
        elif status == Status.shell:
            self._preflight()
            self.transition(Status.off)
            self.target.activate(self.console)
            self.power.on()
            self._boot()
            self.target.activate(self.shell)
        self.status = status

    def _preflight(self) -> None:
        """Check what booting needs before touching the board."""

    def _boot(self) -> None:
        """Between power-on and the shell prompt: nothing for a board that boots by itself
        (QEMU with -kernel); a rack board is sent its boot image here."""


def _labgrid_config(lab: Lab, files: BootFiles, rundir: Path, qemu: str, guest_sock: Path) -> dict:
    uart_args = " ".join(
        f"-serial unix:{rundir / (name + '.sock')},server=on,wait=off" for name in lab.uart_sockets
    )
    # labgrid appends its own -machine/-cpu/-m; QEMU merges -machine options and lets the
    # last -cpu/-m win, so the lab's full machine arguments can go first unchanged.
    machine_extra = shlex.join(lab.machine_args)
    guest_console_args = (
        "-device virtio-serial-device "
        f"-chardev socket,id=l2con,path={guest_sock} "
        "-device virtconsole,chardev=l2con,name=l2console"
    )
    values = {
        "guest_console_args": guest_console_args,
        "kernel": str(files.kernel),
        "initrd": str(files.initrd),
        "dtb": str(files.dtb),
        "boot_args": files.boot_args,
        "uart_args": uart_args,
        "machine_extra": machine_extra,
        "rundir": str(rundir),
        "qemu": qemu,
    }

    def fill(x: object) -> object:
        if isinstance(x, str):
            return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), x)
        if isinstance(x, dict):
            return {k: fill(v) for k, v in x.items()}
        if isinstance(x, list):
            return [fill(v) for v in x]
        return x

    cfg = fill(lab.labgrid)
    assert isinstance(cfg, dict)
    cfg.setdefault("imports", []).append("pytest_vfio_platform.board")
    return cfg


class Board:
    """One board of a lab, booted on demand into a (variant, kernel) configuration.

    This class boots a QEMU board on this machine (labgrid's QEMUDriver); rack.board.RackBoard
    reaches a board through a labgrid place instead and overrides the backend hooks:
    _config, _prepare, _kill_backend, press_power_button, uart_peer."""

    STRATEGY = "VfioBoardStrategy"

    @classmethod
    def for_session(cls, lab: Lab, rundir: Path, say: Callable[[str], None] = print) -> Board:
        """The board a test session uses (pytest_vfio_platform.boards); say: messages the
        user must see while a test waits."""
        return cls(lab, rundir)

    def __init__(self, lab: Lab, rundir: Path, qemu: str = "qemu-system-aarch64") -> None:
        self.lab = lab
        self.rundir = rundir
        self.qemu = qemu
        rundir.mkdir(parents=True, exist_ok=True)
        self.console_log = rundir / "console.log"
        self.files: BootFiles | None = None
        self.env: Environment | None = None
        self.target = None
        self.recorder: ConsoleRecorder | None = None
        self.boot_offset = 0
        self.boot_seconds = 0.0
        self.boots = 0
        self.needs_reboot = False
        self._guest_console: GuestConsole | None = None
        self._guest_relay: PtyRelay | None = None
        self.checked = CheckedShell()

    # -- lifecycle -------------------------------------------------------------------------
    def ensure(self, files: BootFiles) -> None:
        """Boot into files unless already running them and healthy."""
        if self.files == files and self.target is not None and not self.needs_reboot:
            return
        self.boot(files)

    def boot(self, files: BootFiles) -> None:
        self.power_off()
        self.files = files
        cfgfile = self.rundir / f"labgrid-{files.variant}.yaml"
        cfgfile.write_text(yaml.safe_dump(self._config(files)))
        self._guest_console = None
        self.env = Environment(config_file=str(cfgfile))
        self.target = self.env.get_target("main")
        self._prepare(files)
        console = self.target.get_driver("ConsoleProtocol", activate=False)
        self.recorder = ConsoleRecorder(self.console_log, console)
        self.recorder.mark(
            f"boot {self.boots + 1}: kernel {files.kernel_label}, variant {files.variant}, "
            f"cmdline {files.boot_args}"
        )
        self.boot_offset = self.recorder.offset()
        t0 = time.monotonic()
        strategy = self.target.get_driver(self.STRATEGY)
        try:
            strategy.transition("shell")
        except Exception as e:  # noqa: BLE001 - any failure to reach a shell is a boot failure
            text = self.recorder.since(self.boot_offset)
            crash = find_crash(text)
            self.needs_reboot = True
            self.power_off()
            why = f"kernel crash: {crash}" if crash else f"{type(e).__name__}: {e}".strip()
            raise BoardError(
                f"board '{self.lab.name}' did not reach a shell (variant {files.variant}, kernel "
                f"{files.kernel_label}): {why}; last console output: {_tail(text)!r}",
                str(self.console_log),
            ) from None
        self.boot_seconds = time.monotonic() - t0
        self.boots += 1
        self.needs_reboot = False
        with open(self.rundir / "boots.jsonl", "a") as f:
            rec = {
                "board": self.name(),
                "variant": files.variant,
                "kernel": files.kernel_label,
                "seconds": round(self.boot_seconds, 3),
            }
            f.write(json.dumps(rec) + "\n")

    def name(self) -> str:
        return f"{self.lab.name}/main"

    # -- backend hooks (QEMU on this machine) ----------------------------------------------
    def _config(self, files: BootFiles) -> dict:
        """The labgrid environment for one boot: target main (the board), target guest."""
        # a pty only this user can open, relayed to the unix socket QEMU's chardev connects
        # to: no TCP port a local neighbour could reach (or take first)
        self._close_guest_relay()
        self._guest_relay = PtyRelay("guest", self.socket_path("guest-console"), stall_drop=None)
        cfg = _labgrid_config(self.lab, files, self.rundir, self.qemu, self._guest_relay.sock_path)
        cfg["targets"]["guest"] = guest_target(
            {"RawSerialPort": {"port": self._guest_relay.port, "speed": 115200}}
        )
        return cfg

    def _close_guest_relay(self) -> None:
        relay = getattr(self, "_guest_relay", None)
        if relay is not None:
            relay.close()
            self._guest_relay = None

    def _prepare(self, files: BootFiles) -> None:
        """Anything to set up on the target before power-on (nothing for a QEMU board)."""

    def press_power_button(self) -> None:
        """Pulse the power key (PL061 line 3): QEMU does that for system_powerdown."""
        self.qmp("system_powerdown")

    def uart_peer(self, name: str) -> UartPeer:
        """The far end of a board UART (the lab's uart_sockets)."""
        return UartPeer.unix(str(self.socket_path(name)))

    def guest_console(self) -> GuestConsole:
        """The console of the L2 guest (a virtio-console port of this board), as a labgrid
        target of its own: SerialDriver on the TCP socket + ShellDriver."""
        if self.env is None:
            raise BoardError("board is not booted")
        if self._guest_console is None:
            self._guest_console = GuestConsole(
                self.env.get_target("guest"), self.rundir / "guest-console.log"
            )
        return self._guest_console

    def power_off(self) -> None:
        """Stop the board and release everything labgrid holds (process, sockets)."""
        if getattr(self, "_guest_console", None) is not None:
            self._guest_console.close()
            self._guest_console = None
        if self.target is not None:
            try:
                self.target.deactivate_all_drivers()
            except Exception:  # noqa: BLE001 - a dead QEMU must not stop the cleanup
                self._kill_backend()
            self._kill_backend()
        if self.env is not None:
            self.env.cleanup()
        if self.recorder is not None:
            self.recorder.close()
        self.env = self.target = self.recorder = None
        self._close_guest_relay()

    def _backend_gone(self) -> str | None:
        """Why the board cannot answer if its QEMU process is gone, else None."""
        try:
            drv = self.target.get_driver("QEMUDriver", activate=False) if self.target else None
        except Exception:  # noqa: BLE001
            return None
        child = getattr(drv, "_child", None)
        if child is not None and child.poll() is not None:
            return f"the board's QEMU process exited (status {child.returncode})"
        return None

    def _kill_backend(self) -> None:
        if self.target is None:
            return
        try:
            drv = self.target.get_driver("QEMUDriver", activate=False)
        except Exception:  # noqa: BLE001
            return
        child = getattr(drv, "_child", None)
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        drv._child = None
        drv.status = 0

    close = power_off

    # -- commands --------------------------------------------------------------------------
    @property
    def shell(self):  # noqa: ANN201
        if self.target is None:
            raise BoardError("board is not booted")
        return self.target.get_driver("ShellDriver")

    def run(self, cmd: str, timeout: float = 30.0) -> RunResult:
        """Run cmd on the board: its exit code and output, verified end to end (shellrun)."""
        shell = self.shell
        try:
            return self.checked.run(
                shell.console, shell.prompt, cmd, timeout, str(self.console_log)
            )
        except ConsoleGarbled:
            raise
        except (BoardError, OSError, ExceptionPexpect) as e:
            self.needs_reboot = True
            text = self.recorder.since(self.boot_offset) if self.recorder else b""
            crash = find_crash(text)
            dead = self._backend_gone()
            if crash:
                what = f"board hung running {cmd!r}: kernel crash: {crash}"
            elif dead or not isinstance(e, BoardError):
                why = dead or f"its console failed ({type(e).__name__}: {e})"
                what = f"board died running {cmd!r}: {why}"
            else:
                what = f"board hung running {cmd!r}: {str(e).split(': ', 1)[-1]}"
            raise BoardError(what, str(self.console_log)) from None

    def check(self, cmd: str, timeout: float = 30.0) -> str:
        r = self.run(cmd, timeout)
        if r.rc != 0:
            raise AssertionError(f"command failed on the board (rc={r.rc}): {cmd}\n{r.out}")
        return r.out

    def qmp(self, command: str, arguments: dict | None = None) -> object:
        if self.target is None:
            raise BoardError("board is not booted")
        return self.target.get_driver("QEMUDriver").monitor_command(command, arguments or {})

    def taint(self) -> int:
        return int(self.check("cat /proc/sys/kernel/tainted").strip())

    def uname(self) -> str:
        return self.check("uname -r").strip()

    def socket_path(self, name: str) -> Path:
        return self.rundir / f"{name}.sock"

    def console_since(self, offset: int) -> bytes:
        """Console bytes from offset on; one log file spans every boot of this board."""
        return read_from(self.console_log, offset)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(b: bytes, n: int = 400) -> str:
    return b[-n:].decode(errors="replace")
