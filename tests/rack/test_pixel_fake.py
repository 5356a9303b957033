"""The pixel-rack path, minus the phone: the boot.img the rack board makes for a Pixel is
checked for real (mkbootimg -> unpack_bootimg round trip: kernel, ramdisk with the on-target
agent, opt-in parameter on the command line), then flashed through labgrid's
AndroidFastbootDriver and the real `fastboot` binary to a FAKE Pixel — the project's fastboot
TCP server with a Pixel's A/B variables. A phone on USB cannot be here; everything up to the
USB cable is real."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from labgrid import Environment

from labsim.fastbootd import FastbootServer
from pytest_vfio_platform.images.bootimg import verify_round_trip
from pytest_vfio_platform.lab import load
from pytest_vfio_platform.provision import KernelChoice, boot_files
from pytest_vfio_platform.rack.board import RackBoard

pytestmark = pytest.mark.build  # builds (or finds cached) the real kernel and initramfs

PIXEL_VARS = {
    "product": "oriole",
    "slot-count": "2",
    "current-slot": "a",
    "has-slot:boot": "yes",
    "has-slot:dtbo": "yes",
}


@pytest.fixture(scope="module")
def pixel_boot(tmp_path_factory):
    lab = load("pixel-rack")
    files = boot_files(lab, "default", KernelChoice.parse("patched"))
    rundir = tmp_path_factory.mktemp("pixel")
    return lab, files, RackBoard(lab, rundir)._boot_image(files)


def test_pixel_boot_image_round_trips_with_agent_and_cmdline(pixel_boot, tmp_path):
    lab, files, img = pixel_boot
    assert files.dtb is None, "a GKI boot image carries no DTB: the phone boots its own"
    parts = verify_round_trip(
        img, tmp_path / "out", kernel=files.kernel, ramdisk=files.initrd, cmdline=files.boot_args
    )
    assert parts.header_version == 4 and parts.dtb is None
    assert parts.cmdline == files.boot_args
    assert "console=ttySAC0" in parts.cmdline
    names = subprocess.run(
        ["cpio", "-t", "--quiet"], stdin=open(parts.ramdisk, "rb"), capture_output=True, text=True
    ).stdout.split()
    assert "usr/bin/vfio-agent" in names and "init" in names


def test_fastboot_boot_to_fake_pixel_through_labgrid(pixel_boot, tmp_path):
    _, _, img = pixel_boot
    booted = []
    fake = FastbootServer(
        workdir=tmp_path / "fake-pixel",
        variables=PIXEL_VARS,
        on_boot=lambda p: booted.append(p.read_bytes()),
    )
    port = fake.start()
    try:
        cfg = {
            "targets": {
                "main": {
                    "resources": {
                        "AndroidNetFastboot": {
                            "address": "127.0.0.1",
                            "port": port,
                            "protocol": "tcp",
                        }
                    },
                    "drivers": {"AndroidFastbootDriver": {}},
                }
            }
        }
        (tmp_path / "env.yaml").write_text(yaml.safe_dump(cfg))
        target = Environment(str(tmp_path / "env.yaml")).get_target("main")
        fb = target.get_driver("AndroidFastbootDriver")
        assert fb.getvar("product") == "oriole"
        fb.boot(str(img))
    finally:
        fake.stop()
    assert fake.commands[-2:] == [f"download:{img.stat().st_size:08x}", "boot"]
    assert len(booted) == 1 and booted[0] == img.read_bytes()
