"""The dtbo partition image with the AVF VM DTBO as its own entry, and flashing it to a fake Pixel.

mkdtboimg.py cannot run here (no package ships it), so its `create` layout is pinned by
building the expected bytes independently from its rules: header, entries, then the entries'
bytes back to back, no padding. The Pixel is the named fake in rack/fastbootd.py: what is
exercised for real is Debian's fastboot and labgrid's AndroidFastbootDriver choosing the slot
and sending the image; nothing here shows that a Pixel bootloader accepts it.
"""

import shutil
import struct
import subprocess
import textwrap
import zlib

import pytest

from labsim.fastbootd import FastbootServer
from pytest_vfio_platform.guest.crosvm import compile_dtbo, vm_dt_overlay
from pytest_vfio_platform.images.dtboimg import (
    DT_TABLE_MAGIC,
    VM_DTBO_ID,
    Compression,
    DtboImageError,
    DtEntry,
    build_dt_table,
    check_vm_dtbo,
    compress,
    decompress,
    read_dt_header,
    read_dt_table,
    vm_dtbo_index,
    with_vm_dtbo,
    write_dt_table,
)
from pytest_vfio_platform.lab import load

DTC = shutil.which("dtc")
FASTBOOT = shutil.which("fastboot")
needs_dtc = pytest.mark.skipif(DTC is None, reason="dtc not installed (device-tree-compiler)")

VENDOR_A = """\
/dts-v1/;
/plugin/;

&{/} {
	vendor_panel: panel {
		compatible = "vendor,oriole-panel";
		status = "okay";
	};
};
"""
# references a label of the host's base DT: dtc -@ records it under __fixups__
VENDOR_B = """\
/dts-v1/;
/plugin/;

&serial_0 {
	status = "okay";
	clock-frequency = <200000000>;
};
"""
PIXEL_VARIABLES = {
    "product": "oriole",
    "slot-count": "2",
    "current-slot": "a",
    "has-slot:dtbo": "yes",
    "has-slot:boot": "yes",
}


def dtc(src, out):
    subprocess.run([DTC, "-@", "-q", "-I", "dts", "-O", "dtb", "-o", str(out), "-"],
                   input=src, text=True, check=True)  # fmt: skip
    return out


def mkdtboimg_layout(blobs, ids=None, page_size=2048, version=0, words=None, revs=None):
    """What mkdtboimg.py create writes for these files, by its rules (independent of the
    module): header, entries, then the files in order; dt_entries_offset 32, no padding."""
    n = len(blobs)
    offset = 32 + 32 * n
    total = offset + sum(map(len, blobs))
    out = struct.pack(">8I", DT_TABLE_MAGIC, total, 32, 32, n, 32, page_size, version)
    for i, b in enumerate(blobs):
        rest = (words or {}).get(i, (0, 0, 0, 0))
        id_, rev = (ids or {}).get(i, 0), (revs or {}).get(i, 0)
        out += struct.pack(">8I", len(b), offset, id_, rev, *rest)
        offset += len(b)
    return out + b"".join(blobs)


@pytest.fixture
def vendor(tmp_path):
    """A "vendor" dtbo.img from two small host overlays, and the overlays' bytes."""
    if DTC is None:
        pytest.skip("dtc not installed (device-tree-compiler)")
    blobs = [
        dtc(VENDOR_A, tmp_path / "a.dtbo").read_bytes(),
        dtc(VENDOR_B, tmp_path / "b.dtbo").read_bytes(),
    ]
    entries = [DtEntry(blobs[0], id=0x6A, rev=1), DtEntry(blobs[1], id=0x6A, rev=2)]
    img = write_dt_table(entries, tmp_path / "vendor" / "dtbo.img")
    return img, blobs


@pytest.fixture
def vm_dtbo(tmp_path):
    """The VM DTBO from the project's own generator for the Pixel lab's devices."""
    if DTC is None:
        pytest.skip("dtc not installed (device-tree-compiler)")
    devices = load("pixel-rack").devices
    return compile_dtbo(vm_dt_overlay(devices), tmp_path / "vm.dtbo")


# -- the table format ---------------------------------------------------------------------------


def test_write_matches_mkdtboimg_layout(tmp_path):
    blobs = [b"\xd0\x0d\xfe\xed" + bytes(range(60)), b"second entry, odd length!"]
    entries = [DtEntry(blobs[0], id=7), DtEntry(blobs[1], id=VM_DTBO_ID, custom=(1, 2, 3, 4))]
    out = write_dt_table(entries, tmp_path / "x.img", page_size=4096)
    expected = mkdtboimg_layout(blobs, {0: 7, 1: VM_DTBO_ID}, 4096, words={1: (1, 2, 3, 4)})
    assert out.read_bytes() == expected
    assert out.stat().st_mode & 0o777 == 0o644
    assert read_dt_table(out) == entries
    h = read_dt_header(out)
    assert (h.total_size, h.dt_entry_count, h.page_size, h.version) == (len(expected), 2, 4096, 0)


def test_version1_compressed_entry_as_mkdtboimg_stores_it(tmp_path):
    dt = b"\xd0\x0d\xfe\xed" + b"properties " * 200
    for how, reference in (
        (Compression.ZLIB, zlib.compress(dt)),  # mkdtboimg: zlib.compressobj() defaults
        (Compression.GZIP, None),
        *([(Compression.LZ4, None)] if shutil.which("lz4") else []),
    ):
        stored = compress(dt, how)
        if reference is not None:
            assert stored == reference
        entries = [DtEntry(stored, custom=(how, 0, 0, 0)), DtEntry(dt)]
        out = write_dt_table(entries, tmp_path / f"v1-{how.name}.img", version=1)
        assert out.read_bytes() == mkdtboimg_layout(
            [stored, dt], version=1, words={0: (how, 0, 0, 0)}
        )
        back = read_dt_table(out)
        assert back == entries  # the stored bytes, untouched
        assert [decompress(e.data, e.compression(1)) for e in back] == [dt, dt]


def test_share_identical_stores_once(tmp_path):
    a, b = b"A" * 40, b"B" * 24
    out = write_dt_table(
        [DtEntry(a), DtEntry(b), DtEntry(a, id=3)], tmp_path / "s.img", share_identical=True
    )
    raw = out.read_bytes()
    assert len(raw) == 32 + 3 * 32 + 40 + 24 == read_dt_header(out).total_size
    offsets = [struct.unpack_from(">2I", raw, 32 + 32 * i)[1] for i in range(3)]
    assert offsets[0] == offsets[2] == 128 and offsets[1] == 168
    assert [e.data for e in read_dt_table(out)] == [a, b, a]
    # by default equal contents are stored twice, as mkdtboimg does for two distinct files
    assert len(build_dt_table([DtEntry(a), DtEntry(a)])) == 32 + 64 + 80


def test_reader_follows_the_format_not_one_tool(tmp_path):
    """Padding after the header, and a partition dump longer than total_size."""
    blob = b"\xd0\x0d\xfe\xed" + b"x" * 36
    entries_at, data_at = 64, 96
    total = data_at + len(blob)
    raw = bytearray(total)
    struct.pack_into(">8I", raw, 0, DT_TABLE_MAGIC, total, 32, 32, 1, entries_at, 2048, 1)
    struct.pack_into(">8I", raw, entries_at, len(blob), data_at, 9, 1, 0, 0, 0, 0)
    raw[data_at:] = blob
    img = tmp_path / "dump.img"
    img.write_bytes(bytes(raw) + b"\0" * 8192 + b"AVBf" + b"\0" * 60)  # padding, AVB footer
    assert read_dt_table(img) == [DtEntry(blob, id=9, rev=1)]
    assert read_dt_header(img).version == 1


def _corrupt(img, tmp_path, name, offset, value):
    raw = bytearray(img.read_bytes())
    struct.pack_into(">I", raw, offset, value)
    bad = tmp_path / name
    bad.write_bytes(bytes(raw))
    return bad


def test_bad_images_get_clear_errors(tmp_path):
    img = write_dt_table([DtEntry(b"x" * 100), DtEntry(b"y" * 50)], tmp_path / "ok.img")
    raw = img.read_bytes()
    cases = {
        "missing.img": (None, r"'.*missing\.img' does not exist"),
        "empty.img": (b"", r"empty\.img' is 0 bytes, shorter than a dt_table_header"),
        "garbage.img": (b"\x13\x37" * 100, r"garbage\.img' is not a DT table .* magic 0x13371337"),
        "fdt.img": (b"\xd0\x0d\xfe\xed" + bytes(60), r"single device tree blob"),
        "boot.img": (b"ANDROID!" + bytes(100), r"it is a boot image"),
        "sparse.img": (b"\x3a\xff\x26\xed" + bytes(100), r"simg2img"),
        "cut-in-table.img": (raw[:70], r"cut-in-table\.img' is truncated: .*total_size 246"),
        "cut-in-data.img": (raw[:200], r"cut-in-data\.img' is truncated: .* the file has 200"),
    }
    for name, (data, pattern) in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(DtboImageError, match=pattern):
            read_dt_table(tmp_path / name)
    out_of_bounds = _corrupt(img, tmp_path, "oob.img", 32 + 32 + 4, 250)  # entry 1 dt_offset
    with pytest.raises(DtboImageError, match=r"oob\.img': entry 1 claims bytes 250\.\.300"):
        read_dt_table(out_of_bounds)
    many = _corrupt(img, tmp_path, "count.img", 16, 1000)  # dt_entry_count
    with pytest.raises(DtboImageError, match=r"count\.img': 1000 entries .* outside"):
        read_dt_table(many)
    odd = _corrupt(img, tmp_path, "hsize.img", 8, 40)  # header_size
    with pytest.raises(DtboImageError, match=r"hsize\.img': dt_table_header\.header_size is 40"):
        read_dt_table(odd)
    v2 = _corrupt(img, tmp_path, "v2.img", 28, 2)
    with pytest.raises(DtboImageError, match=r"v2\.img': DT table version 2"):
        read_dt_header(v2)
    with pytest.raises(DtboImageError, match="is a directory"):
        read_dt_table(tmp_path)


def test_bad_entries_are_refused_before_writing(tmp_path):
    out = tmp_path / "never.img"
    for args, kw, pattern in (
        ([], {}, "at least one entry"),
        ([DtEntry(b"x")], {"version": 2}, "version 2: choose 0 or 1"),
        ([DtEntry(b"x")], {"page_size": 0}, "page_size is 0"),
        ([DtEntry(b"x", id=1 << 32)], {}, r"entry 0 id is 4294967296"),
        ([DtEntry(b"x"), DtEntry(b"y", custom=(0, -1, 0, 0))], {}, r"entry 1 custom\[1\]"),
        ([DtEntry(b"")], {}, "entry 0 has no data"),
        (
            [DtEntry(b"x", custom=(9, 0, 0, 0))],
            {"version": 1, "share_identical": True},
            "compression 9",
        ),
    ):
        with pytest.raises(DtboImageError, match=pattern):
            write_dt_table(args, out, **kw)
    assert not out.exists() and not list(tmp_path.iterdir())


# -- the VM DTBO entry -------------------------------------------------------------------------


@needs_dtc
def test_with_vm_dtbo(vendor, vm_dtbo, tmp_path):
    img, blobs = vendor
    out = with_vm_dtbo(img, vm_dtbo, tmp_path / "out" / "dtbo.img")
    entries = read_dt_table(out)
    assert len(entries) == 3
    assert [e.data for e in entries[:2]] == blobs  # the host overlays, byte-identical
    assert entries[:2] == read_dt_table(img)  # ...with their id, rev and custom words
    assert entries[2].data == vm_dtbo.read_bytes()
    assert (entries[2].id, entries[2].rev, entries[2].custom) == (VM_DTBO_ID, 0, (0, 0, 0, 0))
    assert vm_dtbo_index(entries) == 2  # what GBL reports as androidboot.hypervisor.vm_dtbo_idx
    h = read_dt_header(out)
    assert h.magic == DT_TABLE_MAGIC
    assert h.total_size == out.stat().st_size == 32 + 3 * 32 + sum(len(e.data) for e in entries)
    assert (h.header_size, h.dt_entry_size, h.dt_entry_count) == (32, 32, 3)
    assert (h.dt_entries_offset, h.page_size, h.version) == (32, 2048, 0)
    # the whole file, as mkdtboimg would lay out these three files with these entry options
    assert out.read_bytes() == mkdtboimg_layout(
        [*blobs, vm_dtbo.read_bytes()], ids={0: 0x6A, 1: 0x6A, 2: VM_DTBO_ID}, revs={0: 1, 1: 2}
    )


@needs_dtc
def test_with_vm_dtbo_keeps_a_version1_vendor_table(tmp_path, vm_dtbo):
    """Compressed host overlays stay compressed and untouched; the VM DTBO goes in raw."""
    a = dtc(VENDOR_A, tmp_path / "a.dtbo").read_bytes()
    stored = compress(a, Compression.GZIP)
    vendor = write_dt_table(
        [DtEntry(stored, id=1, custom=(Compression.GZIP, 5, 6, 7))],
        tmp_path / "v1.img",
        page_size=4096,
        version=1,
    )
    out = with_vm_dtbo(vendor, vm_dtbo, tmp_path / "out.img", entry_id=0x8000_0042)
    h = read_dt_header(out)
    assert (h.version, h.page_size, h.dt_entry_count) == (1, 4096, 2)
    host, vm = read_dt_table(out)
    assert host == DtEntry(stored, id=1, custom=(Compression.GZIP, 5, 6, 7))
    assert decompress(host.data, host.compression(1)) == a
    assert vm.compression(1) is Compression.NONE and vm.data == vm_dtbo.read_bytes()
    assert vm.id == 0x8000_0042


@needs_dtc
def test_vm_dtbo_must_be_a_labelled_overlay(tmp_path, vendor):
    img, _ = vendor
    not_overlay = dtc('/dts-v1/;\n/ { model = "base"; serial@0 { reg = <0>; }; };\n',
                      tmp_path / "base.dtb")  # fmt: skip
    unlabelled = dtc(VENDOR_A.replace("vendor_panel: ", ""), tmp_path / "nolabel.dtbo")
    truncated = tmp_path / "cut.dtbo"
    truncated.write_bytes(dtc(VENDOR_A, tmp_path / "full.dtbo").read_bytes()[:100])
    text = tmp_path / "vm.dts"
    text.write_text(VENDOR_A)
    for path, pattern in (
        (not_overlay, r"base\.dtb' is a device tree but not an overlay"),
        (unlabelled, r"nolabel\.dtbo' has no __symbols__.*dtc -@"),
        (truncated, r"cut\.dtbo' is truncated or damaged: its FDT header says \d+ bytes"),
        (text, r"vm\.dts' is not a flattened device tree: magic 0x2f647473"),
        (img, r"already a dtbo partition image"),
        (tmp_path / "absent.dtbo", r"absent\.dtbo' does not exist"),
    ):
        with pytest.raises(DtboImageError, match=pattern):
            with_vm_dtbo(img, path, tmp_path / "never.img")
    assert not (tmp_path / "never.img").exists()
    assert check_vm_dtbo(dtc(VENDOR_A, tmp_path / "ok.dtbo"))  # labelled overlay: accepted


@needs_dtc
def test_vendor_image_problems(tmp_path, vendor, vm_dtbo):
    img, _ = vendor
    once = with_vm_dtbo(img, vm_dtbo, tmp_path / "once.img")
    with pytest.raises(DtboImageError, match=r"once\.img' already has a VM DTBO entry \(index 2"):
        with_vm_dtbo(once, vm_dtbo, tmp_path / "twice.img")
    with pytest.raises(DtboImageError, match=r"vm\.dtbo' is not a DT table"):
        with_vm_dtbo(vm_dtbo, vm_dtbo, tmp_path / "x.img")
    with pytest.raises(DtboImageError, match=r"entry_id is -1"):
        with_vm_dtbo(img, vm_dtbo, tmp_path / "x.img", entry_id=-1)
    two = write_dt_table(
        [DtEntry(b"a", id=VM_DTBO_ID), DtEntry(b"b", id=VM_DTBO_ID | 1)], tmp_path / "two.img"
    )
    with pytest.raises(DtboImageError, match=r"entries \[0, 1\] all have id bit 31"):
        vm_dtbo_index(read_dt_table(two))


# -- flashing it to the fake Pixel ---------------------------------------------------------------


def labgrid_env(tmp_path, port):
    env_file = tmp_path / "env.yaml"
    env_file.write_text(
        textwrap.dedent(
            f"""\
            targets:
              pixel:
                resources:
                  AndroidNetFastboot:
                    address: 127.0.0.1
                    port: {port}
                    protocol: tcp
                drivers:
                  AndroidFastbootDriver: {{}}
            tools:
              fastboot: {FASTBOOT}
            """
        )
    )
    from labgrid import Environment

    return Environment(str(env_file))


@needs_dtc
@pytest.mark.skipif(FASTBOOT is None, reason="fastboot not installed (Debian package 'fastboot')")
def test_flash_to_a_fake_pixel(tmp_path, vendor, vm_dtbo):
    img = with_vm_dtbo(vendor[0], vm_dtbo, tmp_path / "dtbo.img")
    flashed = []
    with FastbootServer(
        workdir=tmp_path / "pixel",
        variables=PIXEL_VARIABLES,
        on_flash=lambda part, path: flashed.append((part, path.read_bytes())),
        idle_timeout=10,
    ) as pixel:
        env = labgrid_env(tmp_path, pixel.port)
        try:
            driver = env.get_target("pixel").get_driver("AndroidFastbootDriver")
            assert driver.getvar("product") == "oriole"
            driver.flash("dtbo", str(img))
        finally:
            env.cleanup()
    assert not pixel.errors
    assert flashed == [("dtbo_a", img.read_bytes())]
    (record,) = [r for r in pixel.records if r.command == "flash:dtbo_a"]
    assert record.reply == "OKAY"
    assert (pixel.workdir / "download-1.img").read_bytes() == img.read_bytes()
    assert record.file == str(pixel.workdir / "download-1.img")
    assert f"download:{img.stat().st_size:08x}" in pixel.commands
    assert "getvar:current-slot" in pixel.commands  # the client chose slot a itself
    assert vm_dtbo_index(read_dt_table(pixel.workdir / "download-1.img")) == 2
