"""Reservation and locking against a real labgrid coordinator (started here, on a free port,
with two tagged places): a busy rack makes a session wait and say so, and no way out of a
run — release, Ctrl-C, SIGTERM, SIGKILL — leaves a place locked."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from pytest_vfio_platform.board import free_port
from pytest_vfio_platform.errors import LabError
from pytest_vfio_platform.rack.cli import client, tool
from pytest_vfio_platform.rack.lease import PlaceLease

TAGS = {"rack": "test", "board": "qemu-virt"}


@pytest.fixture
def coordinator(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [tool("labgrid-coordinator"), "-l", addr],
        cwd=tmp_path,
        stdout=open(tmp_path / "coordinator.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    end = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", int(addr.rsplit(":")[1])), 0.5).close()
            break
        except OSError:
            assert time.monotonic() < end, "coordinator did not start"
            time.sleep(0.1)
    for name in ("board-1", "board-2"):
        client(addr, "-p", name, "create")
        client(addr, "-p", name, "set-tags", *[f"{k}={v}" for k, v in TAGS.items()])
    yield addr
    proc.terminate()
    proc.wait(10)


def holders(addr: str) -> list[str]:
    lines = client(addr, "who").splitlines()[1:]
    return [line.split()[2] for line in lines if line.strip()]


def hold_both(addr: str) -> list[PlaceLease]:
    """Both places of the test rack acquired, as other users would hold them."""
    held = [PlaceLease(addr, TAGS) for _ in range(2)]
    for lease in held:
        lease.acquire(timeout=30)
    return held


def wait_free(addr: str, timeout: float = 20) -> list[str]:
    end = time.monotonic() + timeout
    while holders(addr) and time.monotonic() < end:
        time.sleep(0.3)
    return holders(addr)


def test_two_leases_get_two_places_and_release_them(coordinator):
    a, b = PlaceLease(coordinator, TAGS), PlaceLease(coordinator, TAGS)
    pa, pb = a.acquire(timeout=30), b.acquire(timeout=30)
    assert {pa, pb} == {"board-1", "board-2"}
    assert sorted(holders(coordinator)) == ["board-1", "board-2"]
    a.release()
    b.release()
    assert holders(coordinator) == []
    assert "waiting" not in client(coordinator, "reservations")


def test_busy_rack_waits_visibly_then_times_out_naming_holders(coordinator, monkeypatch):
    monkeypatch.setattr("pytest_vfio_platform.rack.lease.WAIT_REPORT_SECONDS", 2.0)
    held = hold_both(coordinator)
    said: list[str] = []
    third = PlaceLease(coordinator, TAGS, say=said.append)
    with pytest.raises(LabError) as e:
        third.acquire(timeout=3)
    assert said and "waiting" in said[0] and "rack=test" in said[0]
    assert "board-1" in str(e.value) and "board-2" in str(e.value)
    for lease in held:
        lease.release()
    assert holders(coordinator) == []


def test_waiting_session_gets_the_place_when_it_is_released(coordinator, monkeypatch):
    monkeypatch.setattr("pytest_vfio_platform.rack.lease.WAIT_REPORT_SECONDS", 1.0)
    held = hold_both(coordinator)
    said: list[str] = []
    waiter = PlaceLease(coordinator, TAGS, say=said.append)
    import threading

    threading.Timer(3.0, held[0].release).start()
    got = waiter.acquire(timeout=60)
    assert got == "board-1" or got == "board-2"
    assert said, "the waiting session said nothing while it waited"
    waiter.release()
    held[1].release()
    assert holders(coordinator) == []


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pytest_vfio_platform.rack.lease import PlaceLease
    lease = PlaceLease(sys.argv[1], {"rack": "test"})
    print(lease.acquire(timeout=30), flush=True)
    try:
        time.sleep(600)
    except KeyboardInterrupt:
        lease.release()
    """
)


def _test_env() -> dict:
    # SIGINT in a non-interactive child is ignored unless restored: python does restore it
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_holder_leaves_no_stale_lock(coordinator, sig):
    """SIGKILL runs no cleanup in the holder: the reaper process must release for it."""
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, coordinator],
        stdout=subprocess.PIPE,
        text=True,
        env=_test_env(),
        start_new_session=True,
    )
    place = p.stdout.readline().strip()
    assert place in ("board-1", "board-2")
    assert holders(coordinator) == [place]
    # the whole process group, as a CI runner's timeout would
    os.killpg(p.pid, sig)
    p.wait(30)
    assert wait_free(coordinator) == [], f"{place} still locked after {sig.name}"
    assert "board" not in client(coordinator, "reservations")


def test_a_place_is_reserved_by_name(coordinator):
    """--place NAME: the coordinator matches the tag `name` against place names."""
    lease = PlaceLease(coordinator, {"name": "board-2"})
    assert lease.acquire(timeout=30) == "board-2"
    lease.release()
    assert holders(coordinator) == []
