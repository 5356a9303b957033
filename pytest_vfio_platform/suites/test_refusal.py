"""What must stay refused: DMA-capable devices and blocks the driver does not know, and
nothing taken without an explicit driver_override."""

import pytest

from pytest_vfio_platform import vfio

pytestmark = pytest.mark.hil


def test_dma_capable_device_is_refused_with_reason(board, refused_device, assign):
    taint0 = board.taint()
    b = assign(refused_device.sysfs, refused_device.bus)
    assert not b.bound, f"{refused_device.sysfs} ({refused_device.reason}) was assigned: {b.dmesg}"
    # a kernel without the driver refuses everything: that proves nothing about the change
    assert b.known, b.describe_failure()
    assert b.probe_error() in (None, -19), f"expected a refusal (-ENODEV), dmesg: {b.dmesg}"
    why = b.refusal()
    assert why and refused_device.reason in why, (
        f"{b.driver} refused {refused_device.sysfs} without naming {refused_device.reason!r}: "
        f"{b.dmesg}"
    )
    assert not [ln for ln in b.dmesg if "emulated IOMMU" in ln], f"admission logged: {b.dmesg}"
    # the refusal taints nothing (measured from after the host driver's unbind, whose own
    # warnings are not the change's)
    start = taint0 if b.taint_before is None else b.taint_before
    assert board.taint() == start, f"the refusal tainted the kernel: {b.dmesg}"
    assert not [ln for ln in b.dmesg if "WARNING:" in ln], f"the refusal warned: {b.dmesg}"


def test_no_device_is_taken_without_driver_override(board, lab):
    """The driver has no match table: after boot it holds no device, on either bus, and
    every device in the inventory is on its own driver (or none). The buses are those of
    the lab's devices and refused devices alike (a lab may have only refused ones)."""
    drivers = lab.variants["default"].vfio_driver
    buses = {d.bus for d in [*lab.devices, *lab.refused]}
    assert buses, f"lab {lab.name} lists no device at all"
    for bus in sorted(set(drivers) & buses):
        d = f"/sys/bus/{bus}/drivers/{drivers[bus]}"
        out = board.check(f"test -d {d} && echo present; ls {d} 2>/dev/null | grep -c : ; true")
        assert out.split()[:1] == ["present"], (
            f"the kernel has no {d}: the emulated-IOMMU change is absent"
        )
        assert out.split()[1:] == ["0"], f"{d} took devices at boot: {board.check(f'ls {d}')}"


def test_the_driver_binds_nothing_without_driver_override(board, lab, device):
    """Opt-in, asked directly: with driver_override empty, a bind through the driver's own
    `bind` file must be refused by the driver core (no id table, no OF match). The check
    above cannot see a match table when the native driver probes first and wins."""
    drv = lab.variants["default"].vfio_driver[device.bus]
    bus = f"/sys/bus/{device.bus}"
    dev = f"{bus}/devices/{device.sysfs}"
    script = f"""
d={dev}; nd={bus}/drivers/{drv}
if [ ! -d "$nd" ]; then echo absent; exit 0; fi
old=$(basename "$(readlink $d/driver)" 2>/dev/null)
echo "override=$(cat $d/driver_override)"
[ -n "$old" ] && echo {device.sysfs} > $d/driver/unbind
if echo {device.sysfs} > $nd/bind 2>/dev/null; then echo bind=taken; else echo bind=refused; fi
now=$(basename "$(readlink $d/driver)" 2>/dev/null)
echo "now=$now"
[ "$now" = "{drv}" ] && echo {device.sysfs} > $nd/unbind
[ -n "$old" ] && echo {device.sysfs} > {bus}/drivers/$old/bind
echo "restored=$(basename "$(readlink $d/driver)" 2>/dev/null)"
"""
    out = board.check(script)
    assert "absent" not in out.split(), (
        f"the kernel has no {bus}/drivers/{drv}: the emulated-IOMMU change is absent"
    )
    assert "override=(null)" in out, out
    assert "bind=refused" in out and f"now={drv}" not in out, (
        f"{drv} took {device.sysfs} without driver_override: {out}"
    )
    host = device.host_driver or ""
    assert f"restored={host}" in out.splitlines(), f"host driver not restored: {out}"


@pytest.mark.variant("noiommu")
def test_noiommu_mode_binds_but_taints_baseline(board, device, assign):
    """The baseline the change removes: unsafe noiommu mode works on any kernel, and taints."""
    b = assign(device.sysfs, device.bus)
    if not b.bound:
        pytest.fail(b.describe_failure(), pytrace=False)
    assert f"noiommu-{b.group}" in b.nodes
    # the taint is sticky across devices; the per-device evidence is the kernel's message
    assert [ln for ln in b.dmesg if "taint" in ln and "noiommu" in ln], (
        f"no taint message: {b.dmesg}"
    )
    assert board.taint() & 64, "noiommu bind did not taint the kernel (TAINT_USER)"
    res = vfio.agent(board, "info", *vfio.selector(b, "noiommu"))
    assert res["ok"], res.get("error")
