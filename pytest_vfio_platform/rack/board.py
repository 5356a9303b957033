"""A board reached through a labgrid place: reserved and acquired through the coordinator,
powered through the place's power port, booted with an Android boot.img over fastboot, its
console through the exporter's ser2net.

Why the same Board interface as the QEMU lab: every suite runs unchanged on a place; only how
a board is powered, booted and wired differs (the backend hooks below).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attr
import yaml
from labgrid import Environment
from labgrid.factory import target_factory
from labgrid.strategy import StrategyError

from ..board import Board, VfioBoardStrategy
from ..errors import BoardError
from ..guest.console import GuestConsole, guest_target
from ..images.bootimg import make_boot_img
from ..images.cache import Hasher
from ..lab import Lab
from ..provision import BootFiles
from ..stimulus import UartPeer
from .lease import PlaceLease


@target_factory.reg_driver
@attr.s(eq=False)
class RackBoardStrategy(VfioBoardStrategy):
    """off -> shell as VfioBoardStrategy (the console is attached before power-on, so the
    whole boot is recorded), with the board in its bootloader after power-on: `fastboot boot`
    the boot.img."""

    bindings = {**VfioBoardStrategy.bindings, "fastboot": "AndroidFastbootDriver"}
    boot_image = attr.ib(default=None)

    def _preflight(self) -> None:
        if self.boot_image is None:
            raise StrategyError("no boot image set")

    def _boot(self) -> None:
        self.target.activate(self.fastboot)
        self.fastboot.boot(str(self.boot_image))


class RackBoard(Board):
    STRATEGY = "RackBoardStrategy"

    @classmethod
    def for_session(cls, lab: Lab, rundir: Path, say: Callable[[str], None] = print) -> Board:
        return cls(lab, rundir, say=say)

    def __init__(self, lab: Lab, rundir: Path, say=print) -> None:  # noqa: ANN001
        super().__init__(lab, rundir)
        assert lab.rack is not None
        self.spec = lab.rack
        self.lease = PlaceLease(self.spec.coordinator, self.spec.tags, say)
        self.place: str | None = None

    def name(self) -> str:
        return f"{self.lab.name}/{self.place or '?'}"

    def acquire(self) -> None:
        if self.place is None:
            self.place = self.lease.acquire()
            if self.recorder is not None:
                self.recorder.mark(f"acquired place {self.place}")

    # -- backend hooks ---------------------------------------------------------------------
    def _config(self, files: BootFiles) -> dict:
        self.acquire()
        return {
            "options": {"coordinator_address": self.spec.coordinator},
            "targets": {
                "main": {
                    "resources": {"RemotePlace": {"name": self.place}},
                    "drivers": {
                        "NetworkPowerDriver": {},
                        "SerialDriver": {"bindings": {"port": "console"}},
                        "ShellDriver": {
                            "prompt": self.lab.prompt,
                            "login_prompt": " login: ",
                            "username": "root",
                            "login_timeout": 60,
                            "await_login_timeout": 1,
                        },
                        "HttpDigitalOutputDriver": {},
                    },
                }
            },
            "imports": ["pytest_vfio_platform.board", "pytest_vfio_platform.rack.board"],
        }

    def _prepare(self, files: BootFiles) -> None:
        t = self.target
        if self.spec.boot == "fastboot-net":
            # fastboot over TCP is reachable from here: run the client locally (labgrid's
            # Remote* resource would run it on the exporter over SSH, as USB fastboot needs)
            remote = t.get_resource("RemoteAndroidNetFastboot", name="fastboot")
            target_factory.make_resource(
                t,
                "AndroidNetFastboot",
                "fastboot-direct",
                {"address": remote.address, "port": remote.port, "protocol": remote.protocol},
            )
            t.set_binding_map({"fastboot": "fastboot-direct"})
        target_factory.make_driver(t, "AndroidFastbootDriver", None, {})
        strategy = target_factory.make_driver(t, "RackBoardStrategy", None, {})
        strategy.boot_image = self._boot_image(files)

    def _boot_image(self, files: BootFiles) -> Path:
        """One boot.img per boot configuration, kept in the run directory (it is as big as
        kernel + initramfs, and cheap to make again)."""
        h = Hasher("bootimg")
        for k in ("kernel", "initrd", "dtb", "boot_args"):
            h.add(k, str(getattr(files, k)))
        h.add("header", str(self.spec.bootimg_header))
        out = self.rundir / "boot" / f"boot-{files.variant}-{h.hexdigest()[:12]}.img"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            make_boot_img(
                files.kernel,
                files.initrd,
                files.boot_args,
                out,
                dtb=files.dtb if self.spec.bootimg_header == 2 else None,
                header_version=self.spec.bootimg_header,
            )
        return out

    def _kill_backend(self) -> None:
        """A place is powered off through its power port by the strategy; nothing is local."""

    def press_power_button(self) -> None:
        if self.target is None:
            raise BoardError("board is not booted")
        out = self.target.get_driver("HttpDigitalOutputDriver")
        out.set(True)
        out.set(False)

    def _line(self, name: str):  # noqa: ANN202 - labgrid NetworkSerialPort
        if self.target is None:
            raise BoardError("board is not booted")
        return self.target.get_resource("NetworkSerialPort", name=name)

    def uart_peer(self, name: str) -> UartPeer:
        port = self._line(name)
        return UartPeer.rfc2217(port.host, port.port)

    def guest_console(self) -> GuestConsole:
        if self._guest_console is None:
            port = self._line("guest")
            cfg = {
                "targets": {
                    "guest": guest_target(
                        {"NetworkSerialPort": {"host": port.host, "port": port.port}}
                    )
                }
            }
            path = self.rundir / "labgrid-guest.yaml"
            path.write_text(yaml.safe_dump(cfg))
            self._guest_env = Environment(config_file=str(path))
            self._guest_console = GuestConsole(
                self._guest_env.get_target("guest"), self.rundir / "guest-console.log"
            )
        return self._guest_console

    def power_off(self) -> None:
        """Cut the place's power (QEMU stops on the board host), then drop the labgrid side."""
        if self.target is not None:
            try:
                self.target.get_driver(self.STRATEGY).transition("off")
            except Exception:  # noqa: BLE001 - a broken place must not stop the cleanup
                pass
        super().power_off()

    def close(self) -> None:
        try:
            self.power_off()
        finally:
            self.lease.release()
            self.place = None
