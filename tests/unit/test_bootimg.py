"""boot.img round trips through Debian's mkbootimg/unpack_bootimg; bad inputs are clear errors."""

import os
import struct

import pytest

from pytest_vfio_platform.errors import SetupError, VfioPlatformError
from pytest_vfio_platform.images.bootimg import (
    CMDLINE_MAX,
    BootImageError,
    make_boot_img,
    unpack_boot_img,
    verify_round_trip,
)

CMDLINE = "console=ttyAMA0 earlycon rdinit=/init vfio_platform.reset_required=0"


@pytest.fixture
def parts(tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    out = {}
    for name, size in (("kernel", 70001), ("ramdisk", 33333), ("dtb", 4099)):
        (d / name).write_bytes(os.urandom(size))
        out[name] = d / name
    return out


def test_v2_round_trip_is_byte_exact(parts, tmp_path):
    img = make_boot_img(
        parts["kernel"],
        parts["ramdisk"],
        CMDLINE,
        tmp_path / "boot.img",
        dtb=parts["dtb"],
        os_version="15.0.0",
        os_patch_level="2025-01",
    )
    got = unpack_boot_img(img, tmp_path / "out")
    assert got.header_version == 2
    assert got.cmdline == CMDLINE
    assert got.kernel.read_bytes() == parts["kernel"].read_bytes()
    assert got.ramdisk.read_bytes() == parts["ramdisk"].read_bytes()
    assert got.dtb.read_bytes() == parts["dtb"].read_bytes()
    assert (got.os_version, got.os_patch_level) == ("15.0.0", "2025-01")
    verify_round_trip(
        img,
        tmp_path / "again",
        kernel=parts["kernel"],
        ramdisk=parts["ramdisk"],
        dtb=parts["dtb"],
        cmdline=CMDLINE,
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".boot.img.")]


def test_v2_cmdline_over_512_bytes_spans_both_fields(parts, tmp_path):
    long = ("x" * 99 + " ") * 15  # 1500 bytes: 512 in the first field, the rest in the extra
    img = make_boot_img(
        parts["kernel"], parts["ramdisk"], long, tmp_path / "b.img", dtb=parts["dtb"]
    )
    assert unpack_boot_img(img, tmp_path / "o").cmdline == long


def test_v4_has_no_dtb_and_a_v4_header(parts, tmp_path):
    img = make_boot_img(
        parts["kernel"], parts["ramdisk"], CMDLINE, tmp_path / "b.img", header_version=4
    )
    header = img.read_bytes()[:1584]
    # magic, kernel_size, ramdisk_size, os_version, header_size, reserved[4], header_version
    assert header[:8] == b"ANDROID!"
    assert struct.unpack_from("<I", header, 20)[0] == 1584
    assert struct.unpack_from("<I", header, 40)[0] == 4
    assert struct.unpack_from("<I", header, 1580)[0] == 0  # signature_size
    got = verify_round_trip(
        img, tmp_path / "o", kernel=parts["kernel"], ramdisk=parts["ramdisk"], cmdline=CMDLINE
    )
    assert got.header_version == 4
    assert got.dtb is None
    assert got.page_size == 4096


def test_v4_with_dtb_is_refused(parts, tmp_path):
    with pytest.raises(BootImageError, match=r"header v4 has no dtb.*vendor_boot"):
        make_boot_img(
            parts["kernel"],
            parts["ramdisk"],
            CMDLINE,
            tmp_path / "b.img",
            dtb=parts["dtb"],
            header_version=4,
        )
    assert not list(tmp_path.glob("*b.img*"))


def test_v2_without_dtb_is_refused(parts, tmp_path):
    with pytest.raises(BootImageError, match="v2 needs a dtb"):
        make_boot_img(parts["kernel"], parts["ramdisk"], CMDLINE, tmp_path / "b.img")


@pytest.mark.parametrize("version", [2, 4])
def test_cmdline_too_long_is_a_clear_error(parts, tmp_path, version):
    dtb = parts["dtb"] if version == 2 else None
    with pytest.raises(BootImageError) as e:
        make_boot_img(
            parts["kernel"],
            parts["ramdisk"],
            "a" * 1536,
            tmp_path / "b.img",
            dtb=dtb,
            header_version=version,
        )
    assert f"1536 bytes, the header holds at most {CMDLINE_MAX}" in str(e.value)
    assert "shorten it by 1 bytes" in str(e.value)
    # exactly at the limit is fine
    make_boot_img(
        parts["kernel"],
        parts["ramdisk"],
        "a" * CMDLINE_MAX,
        tmp_path / "b.img",
        dtb=dtb,
        header_version=version,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cmdline": "a\nb"}, r"contains '\\n'"),
        ({"header_version": 5}, "header version 5 is not supported"),
        ({"os_version": "200.1"}, "os_version '200.1'"),
        ({"os_patch_level": "2025-13"}, "os_patch_level '2025-13'"),
    ],
)
def test_bad_arguments_are_clear_errors(parts, tmp_path, kwargs, match):
    args = {"cmdline": CMDLINE, "dtb": parts["dtb"], **kwargs}
    cmdline = args.pop("cmdline")
    with pytest.raises(BootImageError, match=match):
        make_boot_img(parts["kernel"], parts["ramdisk"], cmdline, tmp_path / "b.img", **args)


def test_missing_input_names_it(parts, tmp_path):
    with pytest.raises(BootImageError, match="kernel '.*nope' does not exist"):
        make_boot_img(
            tmp_path / "nope", parts["ramdisk"], CMDLINE, tmp_path / "b.img", dtb=parts["dtb"]
        )


def test_garbage_is_not_a_boot_image(tmp_path):
    junk = tmp_path / "junk.img"
    junk.write_bytes(os.urandom(8192))
    with pytest.raises(BootImageError, match="is not an Android boot image"):
        unpack_boot_img(junk, tmp_path / "o")


def test_truncated_image_is_caught(parts, tmp_path):
    img = make_boot_img(
        parts["kernel"], parts["ramdisk"], CMDLINE, tmp_path / "b.img", dtb=parts["dtb"]
    )
    img.write_bytes(img.read_bytes()[:40000])
    with pytest.raises(BootImageError, match="truncated: its header says the kernel is 70001"):
        unpack_boot_img(img, tmp_path / "o")


def test_round_trip_mismatch_names_the_part(parts, tmp_path):
    img = make_boot_img(
        parts["kernel"], parts["ramdisk"], CMDLINE, tmp_path / "b.img", dtb=parts["dtb"]
    )
    other = tmp_path / "other-ramdisk"
    other.write_bytes(b"not the ramdisk")
    with pytest.raises(BootImageError) as e:
        verify_round_trip(
            img,
            tmp_path / "o",
            kernel=parts["kernel"],
            ramdisk=other,
            dtb=parts["dtb"],
            cmdline=CMDLINE + " quiet",
        )
    msg = str(e.value)
    assert "ramdisk: the image's (33333 bytes" in msg
    assert "cmdline: expected" in msg
    assert "kernel:" not in msg


@pytest.mark.parametrize("tool", ["mkbootimg", "unpack_bootimg"])
def test_missing_tool_names_the_package(parts, tmp_path, monkeypatch, tool):
    img = make_boot_img(
        parts["kernel"], parts["ramdisk"], CMDLINE, tmp_path / "b.img", dtb=parts["dtb"]
    )
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SetupError) as e:
        if tool == "mkbootimg":
            make_boot_img(
                parts["kernel"], parts["ramdisk"], CMDLINE, tmp_path / "c.img", dtb=parts["dtb"]
            )
        else:
            unpack_boot_img(img, tmp_path / "o")
    assert f"'{tool}' not found" in str(e.value)
    assert "Debian package 'mkbootimg'" in str(e.value)
    assert isinstance(e.value, VfioPlatformError)
