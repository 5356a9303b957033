"""The QEMU backend: an L2 guest started by QEMU inside the board, owning devices through
`-device vfio-platform`.

Why the guest DT is made on the board: QEMU builds no DT node for a generic vfio-platform
device, and a DT dumped elsewhere (TCG, another CPU model) differs from what the board's
QEMU under KVM describes. So the board dumps its own guest machine's DT and dtc appends the
inventory's nodes — the same render_edits the host uses for the board's DT.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass

from ..board import Board
from ..errors import BoardError
from ..images.dtb import DtEdit, dts_value, render_edits
from ..lab import HEREDOC_END, Device
from . import GuestSlot, guest_node, slots

GUEST_DIR = "/guest"
QEMU = "qemu-system-aarch64"
MACHINE = ["-M", "virt,gic-version=3", "-accel", "kvm", "-cpu", "host", "-smp", "1", "-m", "256M"]


def device_node(s: GuestSlot) -> str:
    """A guest DT node for one assigned device. Placement gives reg and interrupts, the
    inventory the rest (guest_node); every clock name gets the guest machine's APB clock."""
    d = s.device
    node = guest_node(d)
    trigger = {"level-high": 4, "level-low": 8, "edge-rising": 1, "edge-falling": 2}[d.irq_trigger]
    lines = [
        f"compatible = {dts_value(node.compatible)};",
        f"reg = <{s.offset:#x} {max(d.mmio_size, 0x1000):#x}>;",
        f"interrupts = <0 {s.spi} {trigger}>;",
    ]
    if node.clock_names:
        clocks = " ".join("&{/apb-pclk}" for _ in node.clock_names)
        lines += [f"clocks = <{clocks}>;", f"clock-names = {dts_value(node.clock_names)};"]
    for k, v in node.props.items():
        val = dts_value(v)
        lines.append(f"{k} = {val};" if val else f"{k};")
    label = f"assigned_{d.name.replace('-', '_')}"
    return f"{label}: {s.node_name} {{\n" + "\n".join("\t" + x for x in lines) + "\n};"


def guest_dt_edits(devices: list[Device]) -> list[DtEdit]:
    """The guest DT: the assigned devices under the platform bus; the guest machine's own
    PL061/PL031/gpio-keys disabled so the assigned ones are gpiochip0, rtc0 and the only
    power key; the assigned UART aliased serial1 so the guest console stays ttyAMA0."""
    ss = slots(devices)
    edits = [DtEdit("/platform-bus@c000000", dts="\n".join(device_node(s) for s in ss))]
    edits += [
        DtEdit(n, set={"status": "disabled"})
        for n in ("/pl061@9030000", "/pl031@9010000", "/gpio-keys")
    ]
    for s in ss:
        path = f"/platform-bus@c000000/{s.node_name}"
        if s.device.cls == "uart":
            edits.append(DtEdit("/aliases", set={"serial1": path}))
        if s.device.cls == "gpio" and s.device.stimulus.line is not None:
            key = (
                'assigned-keys {\n\tcompatible = "gpio-keys";\n\tlabel = "assigned-gpio-keys";\n'
                f"\tpower {{\n\t\tgpios = <&assigned_{s.device.name.replace('-', '_')} "
                f'{s.device.stimulus.line} 0>;\n\t\tlinux,code = <116>;\n\t\tlabel = "power";\n\t}};\n}};'
            )
            edits.append(DtEdit("/", dts=key))
    return edits


# QEMU's own record of how it delivers each assigned interrupt: irqfd (KVM injects, with a
# resample fd for level IRQs) is set up once per IRQ; the userspace path logs every
# interrupt QEMU read from the VFIO eventfd and injected itself.
IRQFD_EVENTS = (
    "vfio_platform_start_level_irqfd_injection",
    "vfio_platform_start_edge_irqfd_injection",
)
USERSPACE_EVENT = "vfio_platform_intp_interrupt"
TRACE_LOG = "/tmp/l2-trace.log"


BACKENDS = ("group", "iommufd")


def qemu_command(
    devices: list[Device], console: str = "/dev/hvc0", backend: str = "group"
) -> list[str]:
    """backend: how QEMU opens the devices. 'group': the legacy container and
    /dev/vfio/<group>; 'iommufd': /dev/iommu and the device's cdev
    (/dev/vfio/devices/vfioN), the path VFIO's new userspace takes."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown VFIO backend {backend!r} (expected one of {BACKENDS})")
    cmd = [QEMU, *MACHINE, "-display", "none", "-nodefaults", "-no-user-config"]
    for ev in (*IRQFD_EVENTS, USERSPACE_EVENT, "vfio_platform_realize"):
        cmd += ["-trace", f"enable={ev}"]
    cmd += ["-D", TRACE_LOG]
    cmd += ["-serial", console, "-nic", "none"]
    cmd += ["-kernel", f"{GUEST_DIR}/Image", "-initrd", f"{GUEST_DIR}/initramfs.cpio"]
    # quiet: every console byte of the guest is a trap into the board's QEMU (itself under
    # TCG) and a write through the board's virtio console; the boot log was 70% of the L2
    # boot (7 of 10 s). Warnings and worse (an oops, a panic) still reach the console;
    # the whole log stays in the guest's dmesg.
    cmd += ["-dtb", "/tmp/l2.dtb", "-append", "console=ttyAMA0 quiet"]
    if backend == "iommufd":
        cmd += ["-object", "iommufd,id=iommufd0"]
    for d in devices:
        extra = ",iommufd=iommufd0" if backend == "iommufd" else ""
        cmd += ["-device", f"vfio-platform,host={d.sysfs}{extra}"]
    return cmd


class QemuGuest:
    """One L2 guest on a booted board. Its console is the board's guest console (a
    virtio-console port of the board, surfaced as a 0600 pty on this machine)."""

    def __init__(self, board: Board, devices: list[Device], backend: str = "group") -> None:
        self.board = board
        self.devices = devices
        self.backend = backend
        self.pid: int | None = None
        self.boot_seconds = 0.0
        self.boot_steps: dict[str, float] = {}  # the last start(), step by step (ci/bench-guest)
        self._dtb_ready = False

    def prepare_dtb(self) -> None:
        edits = render_edits(guest_dt_edits(self.devices))
        machine = shlex.join(
            [QEMU, *MACHINE[:1], MACHINE[1] + ",dumpdtb=/tmp/l2-base.dtb", *MACHINE[2:]]
        )
        script = (
            f"cat > /tmp/l2-edits.dts <<'{HEREDOC_END}'\n{edits}{HEREDOC_END}\n"
            f"{machine} -display none -nodefaults 2>/tmp/l2-dump.err || {{ cat /tmp/l2-dump.err; exit 1; }}\n"
            "dtc -q -I dtb -O dts /tmp/l2-base.dtb > /tmp/l2.dts && cat /tmp/l2-edits.dts >> /tmp/l2.dts && "
            "dtc -q -I dts -O dtb -o /tmp/l2.dtb /tmp/l2.dts"
        )
        r = self.board.run(script, timeout=60)
        if r.rc != 0:
            raise BoardError(
                f"writing the guest DT on the board failed: {r.out[-800:]}",
                str(self.board.console_log),
            )

    def start(self, timeout: float = 60.0) -> None:
        """Start the guest and wait for its shell. A VMM that refuses the device fails here
        with QEMU's own message (e.g. a device not bound to vfio-platform)."""
        if not self._dtb_ready:
            self.prepare_dtb()
            self._dtb_ready = True
        console = self.board.guest_console()
        console.detach_shell()
        argv = shlex.join(qemu_command(self.devices, backend=self.backend))
        cmd = argv + " -daemonize -pidfile /tmp/l2.pid"
        t0 = time.monotonic()
        r = self.board.run(
            f"rm -f /tmp/l2.pid; {cmd} 2>/tmp/l2.err; rc=$?; cat /tmp/l2.err; exit $rc", timeout=60
        )
        if r.rc != 0:
            raise GuestStartError(
                f"the board's QEMU refused to start the guest (rc {r.rc}): "
                f"{(r.out.strip() or self._why_not(argv))[-1200:]}"
            )
        t1 = time.monotonic()
        self.pid = int(self.board.check("cat /tmp/l2.pid").strip())
        banner = console.attach_shell(timeout)
        t3 = time.monotonic()
        self.boot_seconds = t3 - t0
        self.boot_steps = {
            "qemu start": t1 - t0,
            "kernel + init": banner - t1,
            "shell": t3 - banner,
            "total": self.boot_seconds,
        }

    def _why_not(self, argv: str) -> str:
        """QEMU's own message when -daemonize lost it (its child reports a failed device
        realize only as an exit status): the same command once more in the foreground,
        stopped before the guest runs (-S), so the error is printed and nothing boots."""
        r = self.board.run(
            f"timeout 20 {argv} -S 2>&1 | grep -v 'is deprecated' | tail -5", timeout=40
        )
        return r.out.strip() or "(QEMU printed nothing)"

    def run(self, cmd: str, timeout: float = 30.0):  # noqa: ANN201 - RunResult
        return self.board.guest_console().run(cmd, timeout)

    def wait_for(self, cmd: str, timeout: float):  # noqa: ANN201 - RunResult
        return self.board.guest_console().wait_for(cmd, timeout)

    def check(self, cmd: str, timeout: float = 30.0) -> str:
        r = self.run(cmd, timeout)
        if r.rc != 0:
            raise AssertionError(f"command failed in the guest (rc={r.rc}): {cmd}\n{r.out}")
        return r.out

    def irq_paths(self) -> IrqPaths:
        """How this guest's VMM delivered the assigned interrupts so far (from its trace)."""
        text = self.board.check(f"cat {TRACE_LOG} 2>/dev/null; true")
        return IrqPaths.parse(text, len(self.devices))

    def alive(self) -> bool:
        return self.pid is not None and self.board.run(f"kill -0 {self.pid} 2>/dev/null").rc == 0

    def kill(self, signal: str = "KILL", timeout: float = 20.0) -> None:
        """Stop the VMM (SIGKILL by default: the release path must not need its cooperation)
        and wait until it is gone, so the device is free again."""
        if self.pid is None:
            return
        self.board.run(f"kill -{signal} {self.pid} 2>/dev/null")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.alive():
                self.pid = None
                self.board.guest_console().detach_shell()
                return
            time.sleep(0.1)
        raise BoardError(
            f"guest VMM pid {self.pid} survived SIGKILL for {timeout:.0f}s",
            str(self.board.console_log),
        )


@dataclass
class IrqPaths:
    """The interrupt path QEMU used: irqfd set up per assigned IRQ, or its userspace path
    (every interrupt read and injected by QEMU itself, counted per eventfd)."""

    irqs: int  # assigned IRQs (one per device here)
    irqfd: list[str]  # one trace line per IRQ that got irqfd
    userspace: dict[str, int]  # eventfd -> interrupts QEMU injected from userspace

    @classmethod
    def parse(cls, text: str, irqs: int) -> IrqPaths:
        irqfd = [ln.strip() for ln in text.splitlines() if any(e in ln for e in IRQFD_EVENTS)]
        userspace: dict[str, int] = {}
        for m in re.finditer(rf"{USERSPACE_EVENT}\b.*?fd = (\d+)", text):
            userspace[m.group(1)] = userspace.get(m.group(1), 0) + 1
        return cls(irqs, irqfd, userspace)

    def summary(self) -> str:
        path = (
            f"irqfd for {len(self.irqfd)} of {self.irqs} assigned IRQs"
            if self.irqfd
            else f"QEMU userspace for all {self.irqs} assigned IRQs (no irqfd set up)"
        )
        counts = ", ".join(f"eventfd {fd}: {n}" for fd, n in sorted(self.userspace.items()))
        return f"{path}; interrupts injected by QEMU itself: {sum(self.userspace.values())}" + (
            f" ({counts})" if counts else ""
        )


class GuestStartError(AssertionError):
    """The VMM would not start the guest with the devices asked for."""
