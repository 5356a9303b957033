"""The crosvm backend: the command line and the VM device-tree overlay for a guest that owns
non-DMA platform devices on an Android (pKVM) board.

Why pure generation: crosvm cannot run on this machine (no arm64 KVM host, no pKVM), so this
module only writes what the board runs -- the `crosvm run` argv and the DTS of the VM DTBO --
and the unit tests pin both against crosvm's and AVF's documented syntax. The board compiles
nothing: `compile_dtbo()` turns the source into the binary crosvm reads (`dtc -@`).

How crosvm assigns a platform device (read from the sources named below, not guessed):

* `--vfio PATH[,iommu=off|viommu|coiommu|pkvm-iommu][,dt-symbol=SYMBOL]`, PATH the device's
  sysfs directory. crosvm decides PCI vs platform from VFIO_DEVICE_GET_INFO: only
  VFIO_DEVICE_FLAGS_PCI or VFIO_DEVICE_FLAGS_PLATFORM are accepted, anything else (a vfio-amba
  device reports VFIO_DEVICE_FLAGS_AMBA) fails with UnknownDeviceType. `guest-address=` is a
  PCI address and is refused for platform devices, so it is never emitted here. A platform
  device without `dt-symbol` fails (MissingDeviceTreeSymbol).
* `--device-tree-overlay PATH[,filter]`: PATH is a compiled overlay *binary*. With `filter`
  only the overlay nodes labelled by a `--vfio ...,dt-symbol=` (plus whatever they reference by
  phandle) are applied. crosvm finds each device's node through the overlay's `__symbols__`
  (so the overlay must be built with `dtc -@`), expects the symbol to point at
  `/fragment@N/__overlay__/...`, and only applies fragments that carry `target-path`
  (`&{/} {...}` compiles to `target-path = "/"`).
* Before applying the overlay crosvm *overwrites* the node's `reg` (u64 address/size pairs,
  i.e. 2+2 cells) and `interrupts` (`<0 SPI flags>`, flags 4 for a level IRQ -- one VFIO
  reports AUTOMASKED -- and 1 for an edge IRQ) with what its allocators handed out. The values
  this module writes there are therefore a prediction, not an input: they are what crosvm is
  expected to allocate for exactly the command `crosvm_command()` builds (see `placements()`),
  so the DTBO reads right on its own and a dumped guest DT (`--dump-device-tree-blob`) can be
  compared with it.
* Placement rules used for that prediction: platform MMIO is a window of 8 MiB right after
  guest RAM (RAM starts at 0x8000_0000, so it begins at 0x8000_0000 + --mem); each VFIO
  region is allocated there first-fit, page aligned, in `--vfio` order. Platform IRQs come
  from the same allocator as PCI INTx, starting at AARCH64_IRQ_BASE, after the PCI devices:
  the command disables crosvm's default PCI devices (`--no-balloon --no-rng --no-usb`) so the
  first assigned IRQ is AARCH64_IRQ_BASE itself and each device's IRQs follow in order.

Where crosvm's syntax differs between versions (the Android 15/16 form is the one emitted;
no dates are claimed below that the sources do not show):

* `iommu=pkvm-iommu` and `dt-symbol=` are newer: the older google/crosvm cmdline.rs in the
  index documents `--vfio PATH[,guest-address=..][,iommu=viommu|coiommu|off]` only, while the
  crosvm AVF drives in Android 15 takes `--vfio=PATH,iommu=pkvm-iommu,dt-symbol=LABEL`.
  `--vfio-platform PATH` (no options) still exists but is documented as deprecated in favour
  of `--vfio`.
* The overlay filter: older crosvm keeps a boolean (`DtbOverlay::do_filter`, then
  `apply_overlay` with the assigned devices' dt-symbols), newer crosvm a symbol allowlist
  (`DtbOverlay::symbol_allowlist`); the command-line form `PATH,filter`
  (`DtboOption { path, filter }`) is the same in both.
* AARCH64_IRQ_BASE is 3 in older crosvm (msft-mirror-aosp/platform.external.crosvm) and 4 in
  newer (chromium-full-mirror/chromiumos_platform_crosvm), where the goldfish battery got the
  fixed SPI 3. FIRST_IRQ follows the newer value.
* `--serial type=unix-stream,...,input-unix-stream` (a bidirectional stream socket that crosvm
  *connects to*, without retrying) is newer crosvm; older crosvm only has `type=unix`, an
  output-only datagram socket.
* `--mem N` / `--cpus N`: Android 15's AVF passes bare numbers; Android 16's AVF writes
  `--cpus num-cores=N`. The bare form is emitted (newer crosvm documents `num-cores=` as the
  first key of `--cpus`).
* AVF's own order of `--device-tree-overlay` and the `--vfio`s differs between Android 15 and
  16; both are repeatable options, so the order between them does not matter to crosvm. The
  order *among* the `--vfio`s does: it fixes the placement.

Sources (repository + path, read through the project's code index):

* google/crosvm and its forks, src/crosvm/cmdline.rs (`--vfio`, `--device-tree-overlay`,
  `--serial`, `--no-balloon`, `--no-rng`, `--no-usb`, `--protected-vm`; read in
  Droid-VM/crosvm, a recent fork: its `--serial` text adds fork-only types, unused here),
  src/crosvm/sys/linux/config.rs (VfioOption: path, iommu, guest-address, dt-symbol),
  src/crosvm/config.rs (DtboOption: path, filter), devices/src/vfio.rs (device type from
  VFIO_DEVICE_FLAGS_PCI/PLATFORM), src/crosvm/sys/linux.rs (guest-address refused for
  platform devices), arch/src/sys/linux.rs (generate_platform_bus: dt-symbol required, IRQ
  allocation, level=4/edge=1), arch/src/fdt.rs (apply_device_tree_overlays,
  patch_fdt_node/update_device_nodes), cros_fdt/src/overlay.rs (fragments, target-path,
  __symbols__, filtering by phandle dependencies), devices/src/serial_device.rs and
  devices/src/sys/linux/serial_device.rs (unix-stream connects), aarch64/src/lib.rs
  (AARCH64_PHYS_MEM_START, AARCH64_PLATFORM_MMIO_SIZE, plat_mmio_base = RAM end,
  AARCH64_IRQ_BASE, PCI root built before the platform bus; read in
  chromium-full-mirror/chromiumos_platform_crosvm and msft-mirror-aosp/platform.external.crosvm),
  docs/book/src/appendix/memory_layout.md ("Platform device MMIO region: after RAM, 8 MiB").
* AOSP packages/modules/Virtualization (mirrors:
  LineageOS/android_packages_modules_Virtualization,
  GrapheneOS/platform_packages_modules_Virtualization): docs/device_assignment.md (the VM
  DTBO format: devices under `&{/}` with labels, a `/host` node with physical `reg` and
  `android,pvmfw,target = <&label>` for pvmfw, compiled with `dtc -@`);
  virtualizationmanager/src/crosvm.rs, Android 15 (`append_platform_devices`:
  `--device-tree-overlay=DTBO,filter`, then `--vfio=PATH,iommu=pkvm-iommu,dt-symbol=LABEL`
  per device with PATH canonicalised under /sys/devices/platform; `--mem N`, `--cpus N`,
  `--no-balloon`, `--disable-sandbox`, `--protected-vm`); android/virtmgr/src/crosvm.rs, later
  (`CrosvmCommand::add_assigned_devices_arg`, same `--vfio`/overlay values).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError
from ..images.dtb import dts_value
from ..images.tools import require
from ..lab import Device
from . import guest_node

CROSVM = "crosvm"  # on Android: /apex/com.android.virt/bin/crosvm
SYSFS_PLATFORM_DEVICES = "/sys/bus/platform/devices"
IOMMU_TYPES = ("pkvm-iommu", "viommu", "coiommu", "off")  # crosvm IommuDevType names

AARCH64_PHYS_MEM_START = 0x8000_0000  # guest RAM starts at 2 GiB
AARCH64_PLATFORM_MMIO_SIZE = 0x80_0000  # the platform-device MMIO window after RAM
FIRST_IRQ = 4  # AARCH64_IRQ_BASE in newer crosvm (3 in older)
# crosvm aligns each region to the *host* page (4 KiB assumed; a 16 KiB-page kernel spaces
# the devices wider)
PAGE_SIZE = 0x1000
IRQ_LEVEL, IRQ_EDGE = 4, 1  # crosvm PlatformBusResources::IRQ_TRIGGER_LEVEL / _EDGE

LABEL_PREFIX = "assigned_"  # the QEMU backend labels its guest nodes the same way
MAX_LABEL = 31  # DT spec: labels are 1..31 characters
# PrimeCells' clocks (guest_node): a fixed clock of the overlay's own, as in the QEMU backend
PCLK_LABEL, PCLK_NODE, PCLK_HZ = "assigned_apb_pclk", "assigned-apb-pclk", 24_000_000
NODE_NAMES = {"uart": "serial", "gpio": "gpio", "rtc": "rtc", "timer": "timer"}


@dataclass(frozen=True)
class Placement:
    """Where crosvm is expected to put one assigned device in the guest."""

    device: Device
    symbol: str  # the dt-symbol: label of the overlay node, `--vfio ...,dt-symbol=`
    guest_base: int
    size: int
    spi: int
    irq_flags: int  # 4 level (crosvm makes every level IRQ level-high), 1 edge (rising)

    @property
    def node_name(self) -> str:
        return f"{NODE_NAMES.get(self.device.cls, 'device')}@{self.guest_base:x}"


def dt_symbol(device: Device) -> str:
    """The DT label for a device: stable (a function of its name only), made of DT label
    characters, so it is also safe inside crosvm's comma-separated `--vfio` value."""
    label = LABEL_PREFIX + re.sub(r"[^a-z0-9_]", "_", device.name.lower())
    if len(label) > MAX_LABEL:
        raise ValueError(
            f"device {device.name!r}: its DT label {label!r} is longer than {MAX_LABEL} "
            "characters (the DT limit); give the device a shorter name in the lab file"
        )
    return label


def _check(devices: list[Device]) -> list[str]:
    """Refuse what crosvm would refuse, before a board is reserved; return the dt-symbols."""
    if not devices:
        raise ValueError("no devices to assign: crosvm's VFIO platform path needs at least one")
    seen: dict[str, str] = {}
    symbols = []
    for d in devices:
        if d.bus != "platform":
            raise ValueError(
                f"device {d.name!r} ({d.sysfs}) is on the {d.bus!r} bus: crosvm's --vfio takes "
                "only devices whose VFIO_DEVICE_GET_INFO reports VFIO_DEVICE_FLAGS_PLATFORM "
                "(vfio-amba devices report VFIO_DEVICE_FLAGS_AMBA and crosvm stops with "
                'UnknownDeviceType); present it as a platform device (no "arm,primecell" in '
                "the host DT), as the QEMU lab's guest variant does"
            )
        if d.name in seen:
            raise ValueError(
                f"device name {d.name!r} is listed twice; each device is assigned once"
            )
        sym = dt_symbol(d)
        if sym in seen.values():
            other = next(n for n, s in seen.items() if s == sym)
            raise ValueError(
                f"devices {other!r} and {d.name!r} both map to the DT label {sym!r}; "
                "rename one (labels keep only [a-z0-9_])"
            )
        if any(c in sysfs_path(d) for c in ",="):
            raise ValueError(
                f"device {d.name!r}: sysfs path {sysfs_path(d)!r} contains ',' or '=', "
                "which crosvm's key=value parser splits on"
            )
        seen[d.name] = sym
        symbols.append(sym)
    return symbols


def sysfs_path(device: Device) -> str:
    """The PATH for `--vfio`: the device's sysfs directory (crosvm reads `iommu_group` and the
    device name from it). An inventory name like `9000000.pl011` is taken from the platform bus."""
    if device.sysfs.startswith("/"):
        return device.sysfs
    return f"{SYSFS_PLATFORM_DEVICES}/{device.sysfs}"


def placements(devices: list[Device], mem_mib: int = 256) -> list[Placement]:
    """crosvm's expected allocation for these devices in `--vfio` order (one MMIO region and
    one IRQ per inventory device): MMIO first-fit and page aligned from the end of RAM, IRQs
    from FIRST_IRQ up (the command leaves no PCI device to take one first)."""
    symbols = _check(devices)
    base = AARCH64_PHYS_MEM_START + mem_mib * 1024 * 1024
    out, offset, spi = [], 0, FIRST_IRQ
    for d, sym in zip(devices, symbols, strict=True):
        flags = IRQ_LEVEL if d.level_triggered else IRQ_EDGE
        out.append(Placement(d, sym, base + offset, d.mmio_size, spi, flags))
        offset += -(-d.mmio_size // PAGE_SIZE) * PAGE_SIZE
        spi += 1
    if offset > AARCH64_PLATFORM_MMIO_SIZE:
        raise ValueError(
            f"the devices need {offset:#x} bytes of MMIO, more than crosvm's platform window "
            f"({AARCH64_PLATFORM_MMIO_SIZE:#x})"
        )
    return out


def _cells64(v: int) -> str:
    return f"{v >> 32:#x} {v & 0xFFFF_FFFF:#x}"


def _guest_node(p: Placement) -> str:
    node = guest_node(p.device)
    lines = [
        f"compatible = {dts_value(node.compatible)};",
        f"reg = <{_cells64(p.guest_base)} {_cells64(p.size)}>;",
        f"interrupts = <0x0 {p.spi:#x} {p.irq_flags:#x}>;",
    ]
    if node.clock_names:
        lines.append("clocks = <" + " ".join(f"&{PCLK_LABEL}" for _ in node.clock_names) + ">;")
        lines.append(f"clock-names = {dts_value(node.clock_names)};")
    for k, v in node.props.items():
        val = dts_value(v)
        lines.append(f"{k} = {val};" if val else f"{k};")
    body = "".join(f"\t\t{x}\n" for x in lines)
    return f"\t{p.symbol}: {p.node_name} {{\n{body}\t}};\n"


def _host_node(p: Placement) -> str:
    d = p.device
    name = re.sub(r"[^a-z0-9,._+-]", "-", d.name.lower())
    return (
        f"\t\t{name}@{d.mmio_base:x} {{\n"
        f"\t\t\treg = <{_cells64(d.mmio_base)} {d.mmio_size:#x}>;\n"
        f"\t\t\tandroid,pvmfw,target = <&{p.symbol}>;\n"
        "\t\t};\n"
    )


def vm_dt_overlay(devices: list[Device], *, mem_mib: int = 256) -> str:
    """DTS of the VM DTBO for these devices, in AVF's documented layout.

    `&{/}` holds one node per device, labelled with its dt-symbol (what crosvm matches
    `--vfio ...,dt-symbol=` against and what `filter` keeps); `reg`/`interrupts` carry the
    placement crosvm is expected to write there anyway (`placements()`, same `mem_mib` as the
    command). PrimeCells also get "arm,primecell" and a fixed 24 MHz clock defined in the
    overlay itself, so the overlay has no reference into crosvm's base DT (no `__fixups__`)
    and the filter keeps the clock as a dependency. `/host` describes the physical devices
    (`reg`, `android,pvmfw,target`) for pvmfw, which checks assigned devices of a protected VM
    against it; crosvm ignores it (it is not a fragment). Devices without an IOMMU carry no
    `iommus`, which AVF allows.
    """
    ps = placements(devices, mem_mib)
    out = [
        "/dts-v1/;\n/plugin/;\n\n",
        "/* VM device-assignment DTBO (AVF docs/device_assignment.md), generated by\n"
        " * pytest_vfio_platform.guest.crosvm. crosvm overwrites reg/interrupts of the\n"
        " * assigned nodes with its own allocation; the values here are its expected one. */\n\n",
        "/ {\n\thost {\n\t\t#address-cells = <0x2>;\n\t\t#size-cells = <0x1>;\n",
        *(_host_node(p) for p in ps),
        "\t};\n};\n\n&{/} {\n",
    ]
    if any(guest_node(p.device).clock_names for p in ps):
        out.append(
            f"\t{PCLK_LABEL}: {PCLK_NODE} {{\n"
            '\t\tcompatible = "fixed-clock";\n'
            "\t\t#clock-cells = <0x0>;\n"
            f"\t\tclock-frequency = <{PCLK_HZ}>;\n"
            f'\t\tclock-output-names = "{PCLK_LABEL}";\n'
            "\t};\n"
        )
    out += [_guest_node(p) for p in ps]
    out.append("};\n")
    return "".join(out)


# dtc checks an overlay fragment against defaults, not against the DT it will land in: it
# assumes #address-cells/#size-cells 2/1 under `&{/}` (crosvm's root is 2/2: it writes `reg`
# as u64 address/size pairs) and cannot see the root's interrupt-parent (crosvm's GIC). These
# three warnings are about that, not about the overlay; every other check stays on.
BASE_UNAWARE_CHECKS = ("reg_format", "avoid_default_addr_size", "interrupts_property")


def compile_dtbo(source: str, out: Path) -> Path:
    """Compile vm_dt_overlay() output into the binary crosvm's --device-tree-overlay reads.
    `-@` emits `__symbols__` (crosvm finds nodes by dt-symbol through it) and the local
    fixups crosvm needs to renumber phandles into the guest's DT."""
    out.parent.mkdir(parents=True, exist_ok=True)
    quiet = [f"-Wno-{c}" for c in BASE_UNAWARE_CHECKS]
    r = subprocess.run(
        [require("dtc"), "-@", *quiet, "-I", "dts", "-O", "dtb", "-o", str(out), "-"],
        input=source,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise BuildError(f"the VM DTBO does not compile with dtc:\n    {r.stderr.strip()[-800:]}")
    return out


def crosvm_command(
    devices: list[Device],
    *,
    kernel: str,
    initrd: str | None = None,
    dtbo_path: str,
    params: str = "",
    mem_mib: int = 256,
    cpus: int = 1,
    protected: bool = False,
    serial_socket: str | None = None,
    iommu: str = "pkvm-iommu",
    binary: str = CROSVM,
) -> list[str]:
    """`crosvm run` argv for a guest owning `devices`, in the form Android 15/16's AVF uses.

    - `--disable-sandbox`: as AVF; a sandboxed crosvm needs minijail policies and a pivot
      root the lab boards are not set up for.
    - `--no-balloon --no-rng --no-usb`: no default PCI device takes an IRQ before the platform
      bus, so the placement in the overlay is the one crosvm allocates.
    - the console is an 8250 UART (`hardware=serial`, guest ttyS0; crosvm adds `console=`
      itself), on a UNIX stream socket crosvm connects to -- the test must listen there
      first -- or on crosvm's stdout/stdin. The assigned PL011 is then the guest's ttyAMA0.
    - `--device-tree-overlay DTBO,filter` then one `--vfio PATH,iommu=...,dt-symbol=...` per
      device, in inventory order (the order fixes the placement). DTBO is the *compiled*
      overlay (`compile_dtbo(vm_dt_overlay(devices, mem_mib=mem_mib), ...)`).
    - `iommu=pkvm-iommu` is AVF's choice: crosvm asks KVM for the device's stream-ID count
      and attaches a pKVM pvIOMMU. For a device behind no IOMMU (what this project assigns)
      whether that succeeds is the host kernel's business -- not verifiable here; `off`
      skips it.
    - the kernel is the positional argument, last.
    """
    ps = placements(devices, mem_mib)
    if iommu not in IOMMU_TYPES:
        raise ValueError(f"iommu={iommu!r}: crosvm knows {', '.join(IOMMU_TYPES)}")
    if mem_mib < 1 or cpus < 1:
        raise ValueError(f"mem_mib and cpus must be positive (got {mem_mib}, {cpus})")
    for what, value in (("dtbo_path", dtbo_path), ("serial_socket", serial_socket or "")):
        if any(c in value for c in ",="):
            raise ValueError(
                f"{what} {value!r} contains ',' or '=', which crosvm's key=value parser splits on"
            )
    cmd = [binary, "run", "--disable-sandbox", "--mem", str(mem_mib), "--cpus", str(cpus)]
    if protected:
        cmd.append("--protected-vm")
    cmd += ["--no-balloon", "--no-rng", "--no-usb"]
    if serial_socket:
        serial = f"type=unix-stream,path={serial_socket},input-unix-stream"
        cmd += ["--serial", f"{serial},hardware=serial,num=1,console"]
    else:
        cmd += ["--serial", "type=stdout,hardware=serial,num=1,console,stdin"]
    if initrd:
        cmd += ["--initrd", initrd]
    if params:
        cmd += ["--params", params]
    cmd += ["--device-tree-overlay", f"{dtbo_path},filter"]
    for p in ps:
        cmd += ["--vfio", f"{sysfs_path(p.device)},iommu={iommu},dt-symbol={p.symbol}"]
    cmd.append(kernel)
    return cmd
