"""The interrupt path report, from QEMU's trace lines (log backend: `event args`)."""

import pytest

from pytest_vfio_platform.guest.qemu import TRACE_LOG, IrqPaths, qemu_command
from pytest_vfio_platform.lab import load

USERSPACE = """vfio_platform_realize vfio device 9040000.pl011, compat = arm,pl011
vfio_platform_intp_interrupt Inject IRQ #0 (fd = 14)
vfio_platform_intp_interrupt Inject IRQ #0 (fd = 14)
vfio_platform_intp_interrupt Inject IRQ #0 (fd = 17)
"""


def test_userspace_path_counted_per_eventfd():
    p = IrqPaths.parse(USERSPACE, 3)
    assert not p.irqfd and p.userspace == {"14": 2, "17": 1}
    assert p.summary().startswith("QEMU userspace for all 3 assigned IRQs")
    assert "injected by QEMU itself: 3" in p.summary()


def test_irqfd_named_when_set_up():
    text = "vfio_platform_start_level_irqfd_injection IRQ index=0, fd = 14, resamplefd = 15\n"
    p = IrqPaths.parse(text, 2)
    assert len(p.irqfd) == 1 and p.summary().startswith("irqfd for 1 of 2 assigned IRQs")


def test_nothing_traced_is_empty():
    p = IrqPaths.parse("", 1)
    assert not p.irqfd and not p.userspace


def test_vmm_command_traces_the_paths():
    cmd = qemu_command(load("qemu").devices)
    assert ["-D", TRACE_LOG] == cmd[cmd.index("-D") : cmd.index("-D") + 2]
    assert "enable=vfio_platform_intp_interrupt" in cmd
    assert "enable=vfio_platform_start_level_irqfd_injection" in cmd


def test_the_iommufd_backend_opens_every_device_through_one_iommufd_object():
    devices = load("qemu").devices
    cmd = qemu_command(devices, backend="iommufd")
    assert cmd.count("-object") == 1 and "iommufd,id=iommufd0" in cmd
    assigned = [a for a in cmd if a.startswith("vfio-platform,")]
    assert len(assigned) == len(devices)
    assert all(a.endswith(",iommufd=iommufd0") for a in assigned)
    assert not any("iommufd" in a for a in qemu_command(devices))  # group: none of it
    with pytest.raises(ValueError, match="unknown VFIO backend 'vfio-user'"):
        qemu_command(devices, backend="vfio-user")
