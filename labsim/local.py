"""Bring up (or down) a whole labgrid rack on this machine: a coordinator, an exporter and N
QEMU boards, each board a labgrid *place* like a board in the device lab.

Why real labgrid processes: the lab's reservation, locking and resource sharing are the
coordinator's and exporter's; a rack of QEMU boards run through them exercises exactly the
path `--lab=pixel-rack` takes, minus the hardware. Usage:

    python -m labsim.local up   [--lab local-rack] [--dir DIR]
    python -m labsim.local down [--dir DIR]
    python -m labsim.local status

`up` is idempotent: what is already running is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pytest_vfio_platform.errors import LabError, VfioPlatformError
from pytest_vfio_platform.images.cache import atomic_write
from pytest_vfio_platform.lab import Lab, load
from pytest_vfio_platform.private import private_dir
from pytest_vfio_platform.rack.cli import client, tool

from . import ownerrelay, ser2net


def default_dir() -> Path:
    """$VFIO_RACK_DIR, else $XDG_RUNTIME_DIR/vfio-rack (the user's own), else
    /tmp/vfio-rack-$UID — used only once verified as ours (private_dir). Short: unix socket
    paths of the boards live below it (108-byte limit)."""
    if os.environ.get("VFIO_RACK_DIR"):
        return Path(os.environ["VFIO_RACK_DIR"])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "vfio-rack"
    return Path(f"/tmp/vfio-rack-{os.getuid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _ours(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}").stat().st_uid == os.getuid()
    except OSError:
        return False


def _port_open(addr: str) -> bool:
    try:
        with socket.create_connection(ownerrelay.parse_listen(addr), timeout=0.5):
            return True
    except OSError:
        return False


def _unix_open(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def _spawn(
    cmd: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> int:
    with open(log, "ab") as f:
        p = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=f,
            cwd=cwd,
            start_new_session=True,
            env=env,
        )
    return p.pid


def coordinator_argv(addr: str, sock: Path) -> list[str]:
    """labgrid's coordinator, which has no authentication, on a unix socket (sock, in a
    private directory), behind an owner-only relay on the lab's address (labsim.ownerrelay)."""
    return [
        sys.executable,
        "-m",
        "labsim.ownerrelay",
        "--listen",
        addr,
        "--unix",
        str(sock),
        "--",
        tool("labgrid-coordinator"),
        "-l",
        f"unix:{sock}",
    ]


class LocalRack:
    def __init__(self, lab: Lab, workdir: Path | None = None) -> None:
        if lab.rack is None or lab.rack.local_boards == 0:
            raise LabError(f"{lab.path}: not a local rack (needs rack.local_boards > 0)")
        self.lab = lab
        self.spec = lab.rack
        self.dir = (workdir or default_dir()).resolve()
        self.pidfile = self.dir / "pids.json"

    @property
    def coordinator(self) -> str:
        return self.spec.coordinator

    def board_names(self) -> list[str]:
        return [f"{self.spec.place_prefix}{i + 1}" for i in range(self.spec.local_boards)]

    def _pids(self) -> dict[str, int]:
        """The rack's processes, as recorded — trusted only from a directory of ours, and
        only pids of processes that are ours (a planted pids.json must not make `down` kill
        someone else's process groups)."""
        if not self.dir.exists():
            return {}
        private_dir(self.dir)
        try:
            pids = json.loads(self.pidfile.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(pids, dict):
            return {}
        return {k: v for k, v in pids.items() if isinstance(v, int) and _ours(v)}

    def _save(self, pids: dict[str, int]) -> None:
        atomic_write(self.pidfile, json.dumps(pids, indent=1).encode())

    def up(self, wait: float = 30.0) -> None:
        private_dir(self.dir)
        pids = {k: v for k, v in self._pids().items() if _alive(v)}
        if "coordinator" not in pids:
            if _port_open(self.coordinator):
                raise LabError(
                    f"something else listens on {self.coordinator} (the rack's coordinator "
                    f"address in {self.lab.path}): stop it or set LG_COORDINATOR"
                )
            cdir = private_dir(self.dir / "coordinator")
            sock = cdir / "coordinator.sock"
            pids["coordinator"] = _spawn(
                coordinator_argv(self.coordinator, sock),
                self.dir / "coordinator.log",
                cwd=cdir,
            )
            self._save(pids)
            _wait(
                lambda: _port_open(self.coordinator) and _unix_open(sock),
                wait,
                "coordinator",
                self.dir,
            )
        changed = False
        for name in self.board_names():
            bdir = self.dir / name
            if name in pids and (bdir / "state.json").exists():
                continue
            private_dir(bdir)
            (bdir / "state.json").unlink(missing_ok=True)
            pids[name] = _spawn(
                [
                    sys.executable,
                    "-m",
                    "labsim.boardd",
                    "--name",
                    name,
                    "--dir",
                    str(bdir),
                    "--machine-args",
                    shlex.join(self.lab.machine_args),
                ],
                bdir / "boardd.log",
            )
            self._save(pids)
            _wait(lambda b=bdir: (b / "state.json").exists(), wait, f"board {name}", bdir)
            changed = True
        if changed or "exporter" not in pids:
            if "exporter" in pids:
                _terminate(pids.pop("exporter"))
            bindir = ser2net.install(self.dir / "bin")
            cfg = self.dir / "exporter.yaml"
            cfg.write_text(yaml.safe_dump(self.exporter_config()))
            pids["exporter"] = _spawn(
                [
                    tool("labgrid-exporter"),
                    "-c",
                    self.coordinator,
                    "--name",
                    self.spec.exporter,
                    "--hostname",
                    "127.0.0.1",
                    str(cfg),
                ],
                self.dir / "exporter.log",
                # its ser2net listens on loopback only (labsim/ser2net.py)
                env={**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"},
            )
            self._save(pids)
        self._ensure_places()
        _wait(self._resources_visible, wait, "exporter resources", self.dir)

    def exporter_config(self) -> dict:
        cfg: dict = {}
        for name in self.board_names():
            st = json.loads((self.dir / name / "state.json").read_text())
            http = st["http"]
            group = {
                line: {"cls": "RawSerialPort", "port": pty, "speed": 115200}
                for line, pty in st["lines"].items()
            }
            group["power"] = {
                "cls": "NetworkPowerPort",
                "model": "simplerest",
                "host": http + "/power/{index}/{value}",
                "index": 0,
            }
            group["button"] = {
                "cls": "HttpDigitalOutput",
                "url": http + "/button",
                "body_asserted": "1",
                "body_deasserted": "0",
            }
            group["fastboot"] = {
                "cls": "AndroidNetFastboot",
                "address": "127.0.0.1",
                "port": st["fastboot_port"],
                "protocol": "tcp",
            }
            cfg[name] = group
        return cfg

    def _ensure_places(self) -> None:
        have = set(client(self.coordinator, "places").split())
        tags = [f"{k}={v}" for k, v in self.spec.tags.items()]
        for name in self.board_names():
            if name not in have:
                client(self.coordinator, "-p", name, "create")
                client(self.coordinator, "-p", name, "add-match", f"{self.spec.exporter}/{name}/*")
            client(self.coordinator, "-p", name, "set-tags", *tags)

    def _resources_visible(self) -> bool:
        out = client(self.coordinator, "resources", check=False)
        return all(f"{self.spec.exporter}/{n}/" in out for n in self.board_names())

    def down(self) -> None:
        pids = self._pids()
        # exporter first (it stops ser2net), then boards (they stop QEMU), coordinator last
        order = ["exporter", *[k for k in pids if k not in ("exporter", "coordinator")]]
        for key in [*order, "coordinator"]:
            if key in pids:
                _terminate(pids[key])
        self.pidfile.unlink(missing_ok=True)

    def status(self) -> str:
        pids = self._pids()
        lines = [f"{k}: pid {v} {'running' if _alive(v) else 'gone'}" for k, v in pids.items()]
        if pids.get("coordinator") and _alive(pids["coordinator"]):
            lines.append(client(self.coordinator, "who", check=False).strip())
        return "\n".join(lines) or "not running"


def _terminate(pid: int, timeout: float = 5.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait(cond, timeout: float, what: str, where: Path) -> None:  # noqa: ANN001
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise LabError(f"local rack: {what} not up within {timeout:.0f}s; logs in {where}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="run a labgrid rack of QEMU boards on this machine")
    ap.add_argument("command", choices=("up", "down", "status"))
    ap.add_argument("--lab", default="local-rack", help="lab YAML with a rack section")
    ap.add_argument("--dir", type=Path, help=f"state directory (default {default_dir()})")
    a = ap.parse_args(argv)
    try:
        rack = LocalRack(load(a.lab), a.dir)
        if a.command == "up":
            rack.up()
            print(f"local rack up: places {', '.join(rack.board_names())} at {rack.coordinator}")
        elif a.command == "down":
            rack.down()
        else:
            print(rack.status())
    except VfioPlatformError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
