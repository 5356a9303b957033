"""Guests that own assigned devices: a VMM backend per board kind.

QEMU (run inside the QEMU lab's board, `-accel kvm`) and crosvm (Android boards, pKVM) share
one job: from the lab inventory, describe the assigned devices to the guest (its DT) and to
the VMM (its command line). Only QEMU can run here; crosvm's output is pinned by tests.

crosvm (guest/crosvm.py): `crosvm_command()` builds the `crosvm run` argv (`--vfio
PATH,iommu=...,dt-symbol=LABEL` per device, `--device-tree-overlay DTBO,filter`) and
`vm_dt_overlay()` the VM DTBO source in AVF's layout (labelled nodes under `&{/}`, a `/host`
node for pvmfw). crosvm places platform devices itself (MMIO after guest RAM, IRQs from its
allocator) and rewrites `reg`/`interrupts`, so `GuestSlot`/`slots()` below are QEMU-only;
crosvm's expected placement is `crosvm.placements()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..lab import Device

PRIMECELL_CELLID = 0xB105F00D  # the component ID every AMBA PrimeCell reads back
PLATFORM_BUS_BASE = 0x0C000000  # QEMU virt's dynamic sysbus window
FIRST_SPI = 112  # the first dynamic sysbus IRQ on virt (VIRT_PLATFORM_BUS_NUM_IRQS window)


@dataclass(frozen=True)
class GuestSlot:
    """Where one assigned device appears in the guest: QEMU's vfio-platform places the n-th
    device at n * 4 KiB in the platform bus window, interrupt SPI 112 + n."""

    device: Device
    offset: int
    spi: int

    @property
    def guest_base(self) -> int:
        return PLATFORM_BUS_BASE + self.offset

    @property
    def node_name(self) -> str:
        return f"{self.device.compatible.split(',')[-1]}@{self.offset:x}"


def slots(devices: list[Device]) -> list[GuestSlot]:
    out, offset = [], 0
    for n, d in enumerate(devices):
        out.append(GuestSlot(d, offset, FIRST_SPI + n))
        offset += max(d.mmio_size, 0x1000)
    return out


def is_primecell(d: Device) -> bool:
    """The inventory's component ID register reads B105F00D: how the AMBA bus itself tells
    a PrimeCell. The guest's AMBA driver then binds it only with "arm,primecell" and clocks,
    and reads its ID registers from the real (assigned) hardware."""
    cell = d.id_registers.get("cellid")
    return cell is not None and cell[1] == PRIMECELL_CELLID


@dataclass(frozen=True)
class GuestNode:
    """What a device's guest DT node carries beyond its placement (reg, interrupts), the same
    for every VMM: from the inventory (`guest_dt`, the ID registers), never a table in code,
    so a new device class is YAML only."""

    compatible: list[str]
    clock_names: list[str]  # each is fed the guest's APB clock
    props: dict[str, Any]  # the rest of guest_dt, in inventory order


def guest_node(d: Device) -> GuestNode:
    props = dict(d.guest_dt)
    primecell = is_primecell(d)
    names = props.pop("clock-names", ["apb_pclk"] if primecell else [])
    compat = [d.compatible, "arm,primecell"] if primecell else [d.compatible]
    return GuestNode(compat, list(names), props)
