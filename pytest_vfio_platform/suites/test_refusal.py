"""What must stay refused: DMA-capable devices, and everything when the opt-in is off."""

import pytest

from pytest_vfio_platform import vfio

pytestmark = pytest.mark.hil


def test_dma_capable_device_is_refused_with_reason(board, refused_device, assign):
    taint0 = board.taint()
    b = assign(refused_device.sysfs, refused_device.bus)
    assert not b.bound, f"{refused_device.sysfs} ({refused_device.reason}) was assigned: {b.dmesg}"
    assert b.probe_error() == -22, f"expected -EINVAL, dmesg: {b.dmesg}"
    why = [ln for ln in b.dmesg if refused_device.reason in ln and "probe with driver" not in ln]
    assert why, (
        f"kernel refused {refused_device.sysfs} without naming {refused_device.reason!r}: {b.dmesg}"
    )
    assert board.taint() == taint0


@pytest.mark.variant("param-off")
def test_parameter_off_refuses_like_stock(board, device, assign):
    b = assign(device.sysfs, device.bus)
    assert not b.bound, f"{device.sysfs} assigned with allow_nodma_emulated=0: {b.dmesg}"
    assert b.probe_error() == -22
    assert not [ln for ln in b.dmesg if "emulated IOMMU" in ln]
    assert not b.nodes or all(not n.isdigit() for n in b.nodes)


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
