"""The host side of one QEMU board in a rack: what a real board's PDU, bootloader and USB
serial adapters are to a Pixel, this process is to a QEMU `virt` board.

- power: an HTTP relay in the shape labgrid's `simplerest` power backend speaks
  (`GET /power/<index>/<0|1>`); off kills QEMU (a power cut), on puts the board in its
  bootloader, waiting;
- bootloader: fastboot over TCP (`fastboot -s tcp:...`): `fastboot boot boot.img` unpacks the
  Android boot image and starts QEMU on its kernel, ramdisk, DTB and command line — the same
  flow as `fastboot boot` on a phone;
- serial lines: the board console, the UART wired to the test's peer, the L2 guest's console,
  each a pty that outlives QEMU (see pty.py) for the exporter's ser2net;
- a button: `PUT /button` (labgrid's `HttpDigitalOutput`) pulses the power key (GPIO line 3
  of the PL061) through QMP `system_powerdown`, as a relay on the key would.

Run by `rack.local` (one per board); state (ptys, ports, pid) goes to <dir>/state.json.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from labsim.fastbootd import LOG_LIMIT, FastbootServer, rotate
from labsim.peer import is_owner
from labsim.qmp import Qmp, QmpError
from pytest_vfio_platform.images.bootimg import unpack_boot_img
from pytest_vfio_platform.images.cache import atomic_write
from pytest_vfio_platform.private import private_dir
from pytest_vfio_platform.ptyrelay import PtyRelay

LINES = ("uart0", "console", "guest")  # -serial order: uart0 @0x9000000, console = uart1


def _die_with_parent() -> None:
    """QEMU must not outlive its board host (no orphans when the rack is torn down)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class BoardHost:
    def __init__(self, name: str, workdir: Path, qemu: str, machine_args: list[str]) -> None:
        self.name = name
        self.dir = workdir
        self.qemu_bin = qemu
        self.machine_args = machine_args
        private_dir(workdir)
        self.lines = {n: PtyRelay(n, workdir / f"{n}.sock") for n in LINES}
        self.powered = False
        self.proc: subprocess.Popen | None = None
        self.boots = 0
        self.lock = threading.RLock()
        self.fastboot = FastbootServer(
            "127.0.0.1",
            0,
            workdir=workdir / "fastboot",
            variables={"product": "qemu-virt", "serialno": name, "max-download-size": "0x10000000"},
            on_boot=self._fastboot_boot,
        )

    # -- power -----------------------------------------------------------------------------
    def power(self, on: bool) -> None:
        with self.lock:
            self._kill()
            self.powered = on

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- bootloader ------------------------------------------------------------------------
    def _fastboot_boot(self, image: Path) -> str | None:
        with self.lock:
            if not self.powered:
                return "board is powered off"
            if self.running():
                return "board is running an OS, not in its bootloader: power-cycle it first"
            parts = unpack_boot_img(image, self.dir / "boot")
            image.unlink(missing_ok=True)  # the unpacked parts are what boots; keep disk flat
            if parts.dtb is None:
                return "boot.img has no DTB (this board needs header v2 with --dtb)"
            self._start(parts.kernel, parts.ramdisk, parts.dtb, parts.cmdline)
        return None

    def _start(self, kernel: Path, ramdisk: Path | None, dtb: Path, cmdline: str) -> None:
        qmp = self.dir / "qmp.sock"
        qmp.unlink(missing_ok=True)
        cmd = [self.qemu_bin, *self.machine_args, "-nographic", "-nodefaults"]
        cmd += ["-display", "none", "-nic", "none", "-kernel", str(kernel), "-dtb", str(dtb)]
        if ramdisk is not None:
            cmd += ["-initrd", str(ramdisk)]
        cmd += ["-append", cmdline]
        for n in ("uart0", "console"):
            cmd += ["-chardev", f"socket,id={n},path={self.lines[n].sock_path}"]
            cmd += ["-serial", f"chardev:{n}"]
        cmd += ["-device", "virtio-serial-device"]
        cmd += ["-chardev", f"socket,id=l2con,path={self.lines['guest'].sock_path}"]
        cmd += ["-device", "virtconsole,chardev=l2con,name=l2console"]
        cmd += ["-qmp", f"unix:{qmp},server=on,wait=off"]
        self.boots += 1
        rotate(self.dir / "qemu.log", LOG_LIMIT)  # bounded across power cycles
        log = open(self.dir / "qemu.log", "ab")  # noqa: SIM115 - handed to the child
        log.write(f"--- boot {self.boots}: {shlex.join(cmd)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_die_with_parent
        )
        log.close()

    # -- button ----------------------------------------------------------------------------
    def press_button(self) -> str | None:
        with self.lock:
            if not self.running():
                return "board is not running"
            try:
                q = Qmp(self.dir / "qmp.sock")
                try:
                    q.command("system_powerdown")
                finally:
                    q.close()
            except (QmpError, OSError) as e:
                return f"QMP: {e}"
        return None

    def status(self) -> dict:
        return {
            "name": self.name,
            "powered": self.powered,
            "running": self.running(),
            "boots": self.boots,
            "dropped": {n: r.dropped for n, r in self.lines.items()},
        }

    def close(self) -> None:
        self._kill()
        self.fastboot.stop()
        for r in self.lines.values():
            r.close()


def _handler(host: BoardHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:  # quiet; state is in status
            pass

        def _reply(self, code: int, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _owner_only(self) -> bool:
            """The relay switches a board's power: only its owner may (labsim.peer)."""
            if is_owner(self.connection):
                return True
            self._reply(403, "refused: this board host answers only the user that runs it")
            return False

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if not self._owner_only():
                return
            parts = [p for p in self.path.split("/") if p]
            if parts[:1] == ["power"] and len(parts) == 3 and parts[2] in ("0", "1"):
                host.power(parts[2] == "1")
                self._reply(200, parts[2])
            elif parts[:1] == ["power"] and len(parts) == 2:
                self._reply(200, "1" if host.powered else "0")
            elif parts == ["button"]:
                self._reply(200, "0")
            elif parts == ["status"]:
                self._reply(200, json.dumps(host.status()))
            else:
                self._reply(404, f"no such endpoint: {self.path}")

        def do_PUT(self) -> None:  # noqa: N802
            if not self._owner_only():
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode().strip()
            if self.path.rstrip("/") != "/button":
                self._reply(404, f"no such endpoint: {self.path}")
                return
            err = host.press_button() if body == "1" else None
            self._reply(409 if err else 200, err or body)

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--qemu", default="qemu-system-aarch64")
    ap.add_argument("--machine-args", required=True, help="QEMU machine arguments (shell words)")
    a = ap.parse_args(argv)
    host = BoardHost(a.name, a.dir.resolve(), a.qemu, shlex.split(a.machine_args))
    fastboot_port = host.fastboot.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(host))
    state = {
        "name": a.name,
        "pid": os.getpid(),
        "lines": {n: r.port for n, r in host.lines.items()},
        "http": f"http://127.0.0.1:{http.server_address[1]}",
        "fastboot_port": fastboot_port,
    }
    atomic_write(a.dir / "state.json", json.dumps(state).encode())

    def stop(signum: int, frame: object) -> None:  # noqa: ARG001
        threading.Thread(target=http.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        http.serve_forever(poll_interval=0.2)
    finally:
        host.close()
        (a.dir / "state.json").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
