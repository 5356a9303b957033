"""A local rack of our own for the rack tests: coordinator, exporter and QEMU board hosts on a
free port and a short private directory, torn down afterwards (the shared one that
`rack.local up` starts for people is left alone)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from labsim.local import LocalRack
from pytest_vfio_platform.board import free_port
from pytest_vfio_platform.lab import load


@pytest.fixture
def own_rack(monkeypatch):
    addr = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("LG_COORDINATOR", addr)
    workdir = Path(tempfile.mkdtemp(prefix="vr-", dir="/tmp"))  # short: unix socket paths
    rack = LocalRack(load("local-rack"), workdir)
    rack.up()
    yield rack
    rack.down()
    shutil.rmtree(workdir, ignore_errors=True)
