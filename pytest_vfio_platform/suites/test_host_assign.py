"""Host-side assignment of non-DMA devices through the VFIO UAPI (vfio-platform-nodma, on
the platform and the AMBA bus).

Each test is parametrized over the lab inventory. On a kernel without the change every test
here fails (no vfio-platform-nodma driver): that is the point of the suite.
"""

import shlex
import time

import pytest

from pytest_vfio_platform import booted, vfio
from pytest_vfio_platform.stimulus import pulse

pytestmark = pytest.mark.hil


def _assert_ok(res: dict) -> None:
    assert res.get("ok"), f"vfio-agent failed: {res.get('error')}"


def test_bind_gives_vfio_group_without_taint(board, device, assign):
    taint0 = board.taint()
    b = assign(device.sysfs, device.bus)
    vfio.require_bound(b)
    assert b.group, f"{device.sysfs} bound to {b.driver} but has no iommu_group"
    assert b.group in b.nodes, f"/dev/vfio/{b.group} missing (have {b.nodes})"
    assert not [n for n in b.nodes if n.startswith("noiommu-")], f"noiommu node appeared: {b.nodes}"
    assert board.taint() == taint0, f"kernel taint changed {taint0} -> {board.taint()}"
    admitted = [ln for ln in b.dmesg if "emulated IOMMU" in ln and device.sysfs in ln]
    assert len(admitted) == 1, (
        f"expected one 'emulated IOMMU' line for {device.sysfs}, dmesg: {b.dmesg}"
    )


@pytest.mark.parametrize("path", ["group", "cdev"])
def test_uapi_regions_and_irqs_match_dt(board, device, assign, path):
    b = assign(device.sysfs, device.bus)
    vfio.require_bound(b)
    if path == "cdev" and not b.cdev:
        pytest.fail(f"{device.sysfs}: no vfio cdev under {device.sysfs}/vfio-dev", pytrace=False)
    info = vfio.agent(board, "info", *vfio.selector(b, path))
    _assert_ok(info)
    di = info["device_info"]
    # the platform UAPI on both buses (VMMs know no other), with a reset it runs itself
    assert {"platform", "reset"} <= set(di["flag_names"]), (
        f"device flags {di['flag_names']} lack platform or reset"
    )
    assert di["num_regions"] == 1 and len(info["regions"]) == 1
    region = info["regions"][0]
    node = booted_node(board, device)
    assert region["size"] == node.reg_size, (
        f"VFIO region of {region['size']:#x} bytes, the booted DT's reg is {node.reg_size:#x}"
    )
    assert {"read", "write", "mmap"} <= set(region["flag_names"])
    assert di["num_irqs"] == 1
    irq = info["irqs"][0]
    assert irq["count"] == 1
    level = node.trigger.startswith("level")
    want = {"eventfd", "maskable", "automasked"} if level else {"eventfd"}
    assert set(irq["flag_names"]) >= want, (
        f"irq flags {irq['flag_names']}, the booted DT says {node.trigger}"
    )
    if path == "group":
        assert "viable" in info["group"]["flag_names"]


def booted_node(board, device) -> booted.DtNode:
    """The device's node in the DT the board booted, checked against the lab YAML first:
    the YAML is what the lab expects, the board what it has."""
    node = booted.read_node(board, device.bus, device.sysfs)
    want = booted.DtNode(device.mmio_base, device.mmio_size, device.irq_spi, device.irq_trigger)
    assert node == want, f"{device.sysfs}: the board booted {node}, the lab YAML says {want}"
    return node


@pytest.mark.parametrize("via", ["mmap", "pread"])
def test_identification_registers(board, device, assign, via):
    b = assign(device.sysfs, device.bus)
    vfio.require_bound(b)
    for name, (offset, value) in device.id_registers.items():
        offs = ",".join(hex(offset + 4 * i) for i in range(4))
        res = vfio.agent(
            board, "read", *vfio.selector(b), "--region", "0", "--offset", offs, "--via", via
        )
        _assert_ok(res)
        # PrimeCell ID registers hold one byte each in their low 8 bits, little end first
        got = sum((int(v["value"], 16) & 0xFF) << (8 * i) for i, v in enumerate(res["values"]))
        assert got == value, f"{name} via {via}: read {got:#010x}, inventory says {value:#010x}"


def test_interrupt_arrives_on_eventfd_and_unmask_rearms(board, device, assign, lab):
    stim = device.stimulus
    if stim.kind == "none":
        pytest.skip(f"{device.name}: the lab names no stimulus")
    node = booted_node(board, device)
    b = assign(device.sysfs, device.bus)
    vfio.require_bound(b)
    count = 2  # the second interrupt arrives only if unmask (and the ack) re-armed the line
    ready, out = "/tmp/irq.ready", "/tmp/irq.json"
    args = [*vfio.selector(b), "--index", "0", "--timeout-ms", "8000", "--count", str(count)]
    args += ["--setup", stim.setup, "--ack", stim.ack, "--ready-file", ready]
    board.check(f"rm -f {ready} {out} {out}.done")
    board.check(f"(vfio-agent irq {shlex.join(args)} > {out} 2>&1; echo $? > {out}.done) &")
    peer = board.uart_peer(stim.socket) if stim.kind == "uart-socket" else None
    try:
        for _ in range(50):
            if board.run(f"test -e {ready}").rc == 0:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"agent never armed the interrupt: {board.run(f'cat {out}').out}")
        line = booted.vfio_irq_line(board, device.bus, device.sysfs)
        assert line is not None, f"no vfio-irq line for {device.sysfs}: " + board.check(
            f"cat /sys/bus/{device.bus}/devices/{device.sysfs}/irq0; cat /proc/interrupts"
        )
        kind = "Level" if node.trigger.startswith("level") else "Edge"
        assert (line.spi, line.kind) == (node.spi, kind), (
            f"VFIO requested {line}, the booted DT says SPI {node.spi} {node.trigger}"
        )
        for n in range(count):
            pulse(board, device, peer, n)
            time.sleep(0.3)
        for _ in range(200):
            if board.run(f"test -e {out}.done").rc == 0:
                break
            time.sleep(0.05)
        res = vfio.parse_agent(board.check(f"cat {out}"))
    finally:
        if peer:
            peer.close()
    _assert_ok(res)
    assert res["received"] == count and not res["timed_out"], (
        f"{device.name}: {res['received']} of {count} interrupts arrived (timed out: {res['timed_out']})"
    )
    if node.trigger.startswith("level"):
        assert res["unmask"] == "after_each_event"
