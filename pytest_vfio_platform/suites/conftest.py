"""Fixtures shared by the HIL suites: assignment with guaranteed restore."""

from collections.abc import Callable, Iterator

import pytest

from pytest_vfio_platform import vfio
from pytest_vfio_platform.plugin import variant_of


@pytest.fixture
def assign(board, lab, request) -> Iterator[Callable[..., vfio.Binding]]:
    """assign(sysfs, bus) binds a device to the VFIO driver the test's lab variant names;
    every binding is undone after the test, and the device must be back on the driver it
    had before."""
    done: list[vfio.Binding] = []
    drivers = lab.variants[variant_of(request.node)].vfio_driver

    def _assign(sysfs: str, bus: str) -> vfio.Binding:
        b = vfio.bind(board, sysfs, bus, drivers[bus])
        done.append(b)
        return b

    yield _assign
    problems = []
    for b in reversed(done):
        if board.needs_reboot:
            break  # the board will be rebooted anyway; restoring would only time out
        after = vfio.restore(board, b)
        if after != b.previous:
            problems.append(f"{b.device}: driver after restore {after!r}, before {b.previous!r}")
    assert not problems, "device state not restored: " + "; ".join(problems)
