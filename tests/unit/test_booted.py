"""Reading back what the board booted: DT cells from sysfs, the VFIO line from
/proc/interrupts (shapes as a QEMU virt board prints them)."""

from pytest_vfio_platform.booted import DtNode, IrqLine, parse_interrupts, read_node, vfio_irq_line


def od(*cells: int) -> str:
    b = b"".join(c.to_bytes(4, "big") for c in cells)
    return "\n".join(
        " " + " ".join(f"{x:02x}" for x in b[i : i + 16]) for i in range(0, len(b), 16)
    )


class Board:
    def __init__(self, out: str) -> None:
        self.out, self.cmds = out, []

    def check(self, cmd: str, timeout: float = 30.0) -> str:
        self.cmds.append(cmd)
        return self.out


def test_node_cells_two_and_two():
    out = "\n".join(
        [
            "== ../#address-cells", od(2), "== ../#size-cells", od(2),
            "== reg", od(0, 0x9030000, 0, 0x1000), "== interrupts", od(0, 7, 4),
        ]
    )  # fmt: skip
    b = Board(out)
    assert read_node(b, "amba", "9030000.pl061") == DtNode(0x9030000, 0x1000, 7, "level-high")
    assert "/sys/bus/amba/devices/9030000.pl061/of_node" in b.cmds[0]


def test_node_one_cell_and_a_ppi_and_high_address():
    out = "\n".join(
        [
            "== ../#address-cells", od(1), "== ../#size-cells", od(1),
            "== reg", od(0x1000, 0x200), "== interrupts", od(1, 9, 1),
        ]
    )  # fmt: skip
    assert read_node(Board(out), "platform", "x") == DtNode(0x1000, 0x200, None, "edge-rising")


PROC = """id=
           CPU0       CPU1
 15:        305          0     GICv3  40 Level     uart-pl011
 17:          3          1     GICv3  33 Level     vfio-irq[17](9000000.pl011)
 18:          0          0     GICv3  39 Edge      vfio-irq[18](9030000.pl061)
"""


def test_vfio_irq_line():
    b = Board(PROC)
    assert vfio_irq_line(b, "platform", "9000000.pl011") == IrqLine("GICv3", 33, "Level")
    assert vfio_irq_line(b, "platform", "9000000.pl011").spi == 1
    assert vfio_irq_line(b, "platform", "9030000.pl061").kind == "Edge"
    assert vfio_irq_line(b, "platform", "9010000.pl031") is None


def test_vfio_irq_line_of_an_amba_device_by_its_periphid():
    """vfio-amba names the line after the periphid, not the device."""
    proc = PROC.replace("id=", "id=00141031") + (
        " 19:          2          0     GICv3  34 Level     vfio-irq[19](vfio-amba-00141031)\n"
    )
    assert vfio_irq_line(Board(proc), "amba", "9010000.pl031") == IrqLine("GICv3", 34, "Level")


def test_parse_interrupts_guest_shape():
    """One CPU, a GIC line and a chained PL061 line, as an L2 guest prints them."""
    text = """           CPU0
 14:          2     GICv3  33 Level     uart-pl011
 17:         40 c001000.pl061   3 Edge      power
IPI0:         0       Rescheduling interrupts
Err:          0
"""
    rows = parse_interrupts(text)
    assert [(r.chip, r.hwirq, r.kind, r.name, r.total) for r in rows] == [
        ("GICv3", 33, "Level", "uart-pl011", 2),
        ("c001000.pl061", 3, "Edge", "power", 40),
    ]


def test_vfio_irq_line_of_an_amba_device_under_nodma_by_its_name():
    """vfio-platform-nodma names an AMBA device's line after the device, like vfio-platform."""
    proc = PROC.replace("id=", "id=00141031") + (
        " 19:          2          0     GICv3  34 Level     vfio-irq[19](9010000.pl031)\n"
    )
    assert vfio_irq_line(Board(proc), "amba", "9010000.pl031") == IrqLine("GICv3", 34, "Level")
    assert vfio_irq_line(Board(proc), "amba", "9010000.pl061") is None
