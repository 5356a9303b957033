"""What the booted board says about a device: its DT node as the kernel sees it
(/sys/.../of_node) and the interrupt line the kernel gave it (/proc/interrupts).

Why read it back: the lab YAML is the expectation, the board is the evidence. A suite that
compares VFIO's answers with the YAML passes on a wrong YAML and a DTB that differs from it;
compared with what the board booted, the YAML is checked too.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Protocol

GIC_SPI_BASE = 32  # GIC hwirq of SPI 0
# the DT interrupt specifier's type cell (GIC binding) as the lab's trigger names
DT_TRIGGER = {1: "edge-rising", 2: "edge-falling", 4: "level-high", 8: "level-low"}


class Runs(Protocol):
    def check(self, cmd: str, timeout: float = 30.0) -> str: ...


@dataclass(frozen=True)
class DtNode:
    reg_base: int
    reg_size: int
    spi: int | None  # None: the node's interrupt is not a GIC SPI
    trigger: str


def _cells(hexdump: str) -> list[int]:
    b = bytes.fromhex("".join(hexdump.split()))
    return [int.from_bytes(b[i : i + 4], "big") for i in range(0, len(b) - len(b) % 4, 4)]


def read_node(board: Runs, bus: str, sysfs: str) -> DtNode:
    """The device's first reg window and its interrupt, from the DT the board booted."""
    d = shlex.quote(f"/sys/bus/{bus}/devices/{sysfs}/of_node")
    dump = "od -An -v -tx1"
    out = board.check(
        f"for f in ../'#address-cells' ../'#size-cells' reg interrupts; do "
        f'echo "== $f"; {dump} {d}/"$f"; done'
    )
    parts = dict(
        (m.group(1), m.group(2)) for m in re.finditer(r"== (\S+)\n(.*?)(?=\n== |\Z)", out, re.S)
    )
    ac = _cells(parts["../#address-cells"])[0]
    sc = _cells(parts["../#size-cells"])[0]
    reg = _cells(parts["reg"])
    base = sum(c << (32 * (ac - 1 - i)) for i, c in enumerate(reg[:ac]))
    size = sum(c << (32 * (sc - 1 - i)) for i, c in enumerate(reg[ac : ac + sc]))
    irq = _cells(parts["interrupts"])  # GIC: <type number flags>, type 0 = SPI
    spi = irq[1] if len(irq) >= 3 and irq[0] == 0 else None
    trigger = DT_TRIGGER.get(irq[2] & 0xF, f"type {irq[2]:#x}") if len(irq) >= 3 else "none"
    return DtNode(base, size, spi, trigger)


@dataclass(frozen=True)
class IrqLine:
    chip: str
    hwirq: int
    kind: str  # "Level" or "Edge", as /proc/interrupts prints it

    @property
    def spi(self) -> int | None:
        return self.hwirq - GIC_SPI_BASE if self.chip.startswith("GIC") else None


@dataclass(frozen=True)
class IrqRow:
    """One numbered line of /proc/interrupts: per-CPU counts, then chip, hwirq, type, name."""

    counts: tuple[int, ...]
    chip: str
    hwirq: int
    kind: str
    name: str

    @property
    def total(self) -> int:
        return sum(self.counts)


def parse_interrupts(text: str) -> list[IrqRow]:
    """The numbered lines of a /proc/interrupts dump (IPI and Err lines are left out)."""
    header, *lines = text.splitlines()
    cpus = len(header.split())
    rows = []
    for line in lines:
        num, _, rest = line.partition(":")
        fields = rest.split()
        if not num.strip().isdigit() or len(fields) < cpus + 3:
            continue
        chip, hwirq, kind, *name = fields[cpus:]
        counts = tuple(int(x) for x in fields[:cpus])
        rows.append(IrqRow(counts, chip, int(hwirq), kind, " ".join(name)))
    return rows


def vfio_irq_line(board: Runs, bus: str, sysfs: str) -> IrqLine | None:
    """The line VFIO requested for the device, while a user holds it. vfio-platform and
    vfio-platform-nodma name it `vfio-irq[N](<device>)`; generic vfio-amba after the periphid
    (`vfio-amba-<id>`, sysfs `id`), which two AMBA devices of one IP block share."""
    ident = shlex.quote(f"/sys/bus/{bus}/devices/{sysfs}/id")
    out = board.check(f"echo id=$(cat {ident} 2>/dev/null); cat /proc/interrupts")
    first, _, procfile = out.partition("\n")
    periphid = first.partition("=")[2].strip()
    names = (
        (f"({sysfs})", f"(vfio-amba-{periphid})") if bus == "amba" and periphid else (f"({sysfs})",)
    )
    for row in parse_interrupts(procfile):
        if row.name.startswith("vfio-irq") and row.name.endswith(names):
            return IrqLine(row.chip, row.hwirq, row.kind)
    return None
