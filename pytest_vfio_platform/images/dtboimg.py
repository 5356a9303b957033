"""The dtbo partition image (Android "DT table"), and the AVF VM DTBO as its own entry.

Why this exists: AVF device assignment (packages/modules/Virtualization,
docs/device_assignment.md) wants the VM device-assignment DTBO "included in the dtbo partition
... in its own entry, and not together with any host OS's". To give a Pixel in the device lab
our VM DTBO, the vendor's dtbo.img is taken apart and written back with one more entry; the
host overlays must come out byte for byte as they went in.

Format (https://source.android.com/docs/core/architecture/dto/partitions; AOSP
system/libufdt utils/src/dt_table.h): every word big-endian uint32.

    dt_table_header  magic 0xd7b7ab1e, total_size, header_size (32), dt_entry_size (32),
                     dt_entry_count, dt_entries_offset, page_size, version
    dt_table_entry   dt_size, dt_offset (from the start of the header), id, rev, custom[4]
    v1 entry         dt_size, dt_offset, id, rev, flags, custom[3]: `flags` sits where v0
                     has custom[0]; its low 4 bits say how the entry is compressed
                     (0 none, 1 zlib, 2 gzip, 3 lz4)

Layout rules, read from AOSP system/libufdt utils/src/mkdtboimg.py (`create`), which cannot
run here (no Debian or PyPI package ships it, nothing else can be fetched), so they are
replicated and pinned by the tests instead of compared against the tool:

- header, then the entries right after it (dt_entries_offset = 32), then each entry's bytes
  in entry order, back to back: NO page alignment and no padding anywhere; `page_size` is
  only recorded in the header (bootloaders use it as a hint, mkdtboimg never pads to it);
- total_size = 32 + 32 * count + the bytes stored; the file ends there;
- an entry whose file was already stored (same path, same compression) points at the first
  copy instead of storing it again (`share_identical=True` here, by content);
- with version 1 and a compression in flags, mkdtboimg stores the *compressed* file and
  dt_size is the compressed size (`compress()` below makes the same bytes).

Reading follows the format, not one tool: entries may start after padding
(dt_entries_offset > 32), entries may share bytes, and a file longer than total_size (a
partition dump padded to the partition size, an AVB footer) is fine.

Which entry is the VM DTBO: nothing in the table says so by itself. What the sources show:

- AOSP's generic bootloader (GBL, platform/bootable/libbootloader
  gbl/libgbl/src/device_tree.rs `entry_is_vmdtbo`) treats a dtbo entry whose `id` has bit 31
  set (VMDTBO_FLAG = 1 << 31) as the pVM device-assignment overlay: it is never applied to the
  host DT, it is copied into pvmfw's config as entry 2 (gbl/libgbl/src/android_boot/avf.rs
  `inject_vmdtbo`), and its index goes to Android as bootconfig
  `androidboot.hypervisor.vm_dtbo_idx` (and `...vm_dtbo_source = dtbo`);
- Android reads it back by that index only: virtualizationservice's vfio_handler
  (`writeVmDtbo`) opens /dev/block/by-name/dtbo<slot_suffix>, takes entry
  `ro.boot.hypervisor.vm_dtbo_idx` and hands its raw dt_size bytes to crosvm -- no
  decompression, so the VM DTBO entry is always stored uncompressed here;
- a Pixel's own (non-GBL) bootloader is closed: whether it recognises bit 31, a different id,
  or a fixed index is not public. So `with_vm_dtbo` defaults to id 0x8000_0000 (the GBL
  convention) and takes `entry_id=` for a bootloader with another one.
"""

from __future__ import annotations

import re
import struct
import subprocess
import zlib
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from ..errors import SetupError, VfioPlatformError
from .cache import atomic_write
from .tools import require

DT_TABLE_MAGIC = 0xD7B7AB1E
ACPIO_MAGIC = 0x41435049  # "ACPI": mkdtboimg's --dt_type=acpi table, same layout
FDT_MAGIC = 0xD00DFEED
HEADER_SIZE = 32  # sizeof(dt_table_header)
ENTRY_SIZE = 32  # sizeof(dt_table_entry), v0 and v1 alike
FDT_HEADER_SIZE = 40  # struct fdt_header, version 17
DEFAULT_PAGE_SIZE = 2048  # mkdtboimg's and dt_table.h's DT_TABLE_DEFAULT_PAGE_SIZE
VERSIONS = (0, 1)
U32_MAX = 0xFFFF_FFFF
COMPRESSION_MASK = 0x0F  # v1: the low 4 bits of flags (custom[0] here)
VM_DTBO_FLAG = 1 << 31  # GBL's VMDTBO_FLAG in dt_table_entry.id
VM_DTBO_ID = VM_DTBO_FLAG  # the default id of the VM DTBO entry: the flag, nothing else

_WORDS = struct.Struct(">8I")  # the header and each entry are eight big-endian words
_GZIP_WBITS = 31  # mkdtboimg's _GZIP_COMPRESSION_WBITS
_AUTO_WBITS = 47  # zlib or gzip, as mkdtboimg's dump --decompress reads them
_LZ4_ARGS = ("-12", "--favor-decSpeed")  # what mkdtboimg runs lz4 with


class Compression(IntEnum):
    """dt_compression_info (dt_table.h): the low 4 bits of a v1 entry's flags."""

    NONE = 0
    ZLIB = 1
    GZIP = 2
    LZ4 = 3


class DtboImageError(VfioPlatformError):
    """A dtbo image or VM DTBO that cannot be read or built; names the file and the fix."""


@dataclass(frozen=True)
class DtEntry:
    """One dt_table_entry and its bytes as stored in the image.

    `data` is what the partition holds: for a compressed v1 entry that is the compressed
    stream (see `compress()`/`decompress()`), so entries read from one image and written to
    another stay byte-identical. `custom` is the four words after `rev`; in a version 1 table
    custom[0] is the entry's `flags` word.
    """

    data: bytes
    id: int = 0
    rev: int = 0
    custom: tuple[int, int, int, int] = (0, 0, 0, 0)

    def compression(self, version: int) -> Compression:
        """How `data` is compressed in a table of this version (v0 cannot compress)."""
        if version == 0:
            return Compression.NONE
        bits = self.custom[0] & COMPRESSION_MASK
        try:
            return Compression(bits)
        except ValueError:
            raise DtboImageError(
                f"dt_table_entry flags {self.custom[0]:#x}: compression {bits} is not one of "
                "0 none, 1 zlib, 2 gzip, 3 lz4 (dt_table.h dt_compression_info)"
            ) from None

    @property
    def is_vm_dtbo(self) -> bool:
        """Whether GBL would take this entry for the VM DTBO (bit 31 of id)."""
        return bool(self.id & VM_DTBO_FLAG)


@dataclass(frozen=True)
class DtTableHeader:
    """dt_table_header as read from an image."""

    magic: int
    total_size: int
    header_size: int
    dt_entry_size: int
    dt_entry_count: int
    dt_entries_offset: int
    page_size: int
    version: int


# -- reading ---------------------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DtboImageError(f"{what} '{path}' does not exist") from None
    except IsADirectoryError:
        raise DtboImageError(f"{what} '{path}' is a directory, not a file") from None
    except OSError as e:
        raise DtboImageError(f"{what} '{path}' cannot be read: {e.strerror}") from None


def _not_a_table(path: Path, magic: int, buf: bytes) -> DtboImageError:
    hint = "build one with write_dt_table() or AOSP's mkdtboimg.py create"
    if magic == FDT_MAGIC:
        hint = (
            "it is a single device tree blob (FDT magic 0xd00dfeed), not a dtbo partition "
            "image; pack it into one with write_dt_table()"
        )
    elif magic == ACPIO_MAGIC:
        hint = "it is an ACPI overlay table (mkdtboimg --dt_type=acpi), not a DT table"
    elif buf[:8] == b"ANDROID!":
        hint = "it is a boot image (magic ANDROID!), not the dtbo partition's image"
    elif buf[:8] == b"VNDRBOOT":
        hint = "it is a vendor_boot image; its dtb section is not the dtbo partition"
    elif buf[:4] == b"\x3a\xff\x26\xed":
        hint = "it is an Android sparse image; convert it with simg2img first"
    return DtboImageError(
        f"'{path}' is not a DT table (dtbo.img): magic {magic:#010x} at offset 0, expected "
        f"{DT_TABLE_MAGIC:#010x}; {hint}"
    )


def _parse(buf: bytes, path: Path) -> tuple[DtTableHeader, list[DtEntry]]:
    if len(buf) < HEADER_SIZE:
        if len(buf) >= 4 and struct.unpack_from(">I", buf)[0] != DT_TABLE_MAGIC:
            raise _not_a_table(path, struct.unpack_from(">I", buf)[0], buf)
        raise DtboImageError(
            f"'{path}' is {len(buf)} bytes, shorter than a dt_table_header ({HEADER_SIZE}): "
            "not a dtbo image, or a truncated copy; fetch the image again"
        )
    header = DtTableHeader(*_WORDS.unpack_from(buf, 0))
    if header.magic != DT_TABLE_MAGIC:
        raise _not_a_table(path, header.magic, buf)
    for field, value in (
        ("header_size", header.header_size),
        ("dt_entry_size", header.dt_entry_size),
    ):
        if value != 32:
            raise DtboImageError(
                f"'{path}': dt_table_header.{field} is {value}, expected 32 (the only size "
                "dt_table.h and mkdtboimg.py define); the image is damaged or of a format "
                "this module does not know"
            )
    if header.version not in VERSIONS:
        raise DtboImageError(
            f"'{path}': DT table version {header.version}; versions 0 and 1 are defined "
            "(source.android.com .../dto/partitions, mkdtboimg.py --version)"
        )
    if header.total_size > len(buf):
        raise DtboImageError(
            f"'{path}' is truncated: the header says total_size {header.total_size} bytes, "
            f"the file has {len(buf)}; copy or download the image again"
        )
    table_end = header.dt_entries_offset + header.dt_entry_count * ENTRY_SIZE
    if header.dt_entries_offset < HEADER_SIZE or table_end > header.total_size:
        raise DtboImageError(
            f"'{path}': {header.dt_entry_count} entries at offset {header.dt_entries_offset} "
            f"end at byte {table_end}, outside the table's {HEADER_SIZE}..{header.total_size}; "
            "the header is damaged (or this is not a dtbo image)"
        )
    entries = []
    for i in range(header.dt_entry_count):
        words = _WORDS.unpack_from(buf, header.dt_entries_offset + i * ENTRY_SIZE)
        size, offset = words[0], words[1]
        if offset < HEADER_SIZE or offset + size > header.total_size:
            raise DtboImageError(
                f"'{path}': entry {i} claims bytes {offset}..{offset + size}, outside the "
                f"image's {HEADER_SIZE}..{header.total_size} (total_size); the image is "
                "damaged or truncated"
            )
        entries.append(DtEntry(buf[offset : offset + size], words[2], words[3], words[4:8]))
    return header, entries


def read_dt_header(path: Path) -> DtTableHeader:
    """The validated dt_table_header of a dtbo image (page_size, version, total_size...)."""
    return _parse(_read(path, "dtbo image"), path)[0]


def read_dt_table(path: Path) -> list[DtEntry]:
    """The entries of a dtbo image, in table order, with their stored bytes.

    Raises DtboImageError naming the file for anything that is not a well-formed DT table:
    another magic (with what the file looks like instead), truncation, an entry outside the
    image. Bytes after total_size (partition padding, an AVB footer) are ignored.
    """
    return _parse(_read(path, "dtbo image"), path)[1]


def vm_dtbo_index(entries: list[DtEntry]) -> int | None:
    """Index of the entry GBL takes for the VM DTBO (id bit 31): the value a GBL bootloader
    reports as androidboot.hypervisor.vm_dtbo_idx. None if there is none."""
    found = [i for i, e in enumerate(entries) if e.is_vm_dtbo]
    if len(found) > 1:
        raise DtboImageError(
            f"entries {found} all have id bit 31 set; GBL refuses more than one VM DTBO "
            '("More than one VMDTBO is selected"); keep one'
        )
    return found[0] if found else None


# -- compression (version 1 tables) ----------------------------------------------------------


def _lz4(args: list[str], data: bytes, what: str) -> bytes:
    try:
        lz4 = require("lz4")
    except SetupError as e:
        raise SetupError(f"{what} needs the lz4 tool: {e}") from None
    r = subprocess.run([lz4, *args], input=data, capture_output=True)
    if r.returncode != 0 or r.stderr.strip():
        raise DtboImageError(f"{what}: lz4 failed: {r.stderr.decode(errors='replace')[-400:]}")
    return r.stdout


def compress(data: bytes, how: Compression) -> bytes:
    """`data` compressed as mkdtboimg.py stores a v1 entry with this compression flag:
    zlib and gzip with zlib's defaults (gzip: wbits 31), lz4 by `lz4 -12 --favor-decSpeed`."""
    how = Compression(how)
    if how is Compression.NONE:
        return bytes(data)
    if how is Compression.LZ4:
        return _lz4(list(_LZ4_ARGS), data, "lz4 compression of a DT entry")
    if how is Compression.ZLIB:
        c = zlib.compressobj()
    else:
        c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, _GZIP_WBITS)
    return c.compress(data) + c.flush()


def decompress(data: bytes, how: Compression) -> bytes:
    """The device tree inside a stored v1 entry (the inverse of `compress`)."""
    how = Compression(how)
    if how is Compression.NONE:
        return bytes(data)
    if how is Compression.LZ4:
        return _lz4(["-d", "-c"], data, "lz4 decompression of a DT entry")
    try:
        return zlib.decompress(data, _AUTO_WBITS)
    except zlib.error as e:
        raise DtboImageError(
            f"a DT entry flagged {how.name.lower()} does not decompress ({e}); the entry's "
            "flags and its bytes disagree"
        ) from None


# -- writing ---------------------------------------------------------------------------------


def _u32(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U32_MAX:
        raise DtboImageError(f"{what} is {value!r}; it must be an integer in 0..{U32_MAX:#x}")
    return value


def _atomic_write(out: Path, data: bytes) -> None:
    """Readers (a flashing step, a parallel test) see no image or the whole one. 0644, not
    mkstemp's 0600, so a labgrid exporter running as another user can serve it."""
    atomic_write(out, data, mode=0o644)


def build_dt_table(
    entries: list[DtEntry],
    page_size: int = DEFAULT_PAGE_SIZE,
    version: int = 0,
    *,
    share_identical: bool = False,
) -> bytes:
    """The image bytes `write_dt_table` writes (mkdtboimg's layout, see the module doc)."""
    if not entries:
        raise DtboImageError(
            "a DT table needs at least one entry (mkdtboimg refuses an empty list too)"
        )
    if version not in VERSIONS:
        raise DtboImageError(f"DT table version {version!r}: choose 0 or 1")
    _u32(page_size, "page_size")
    if page_size == 0:
        raise DtboImageError("page_size is 0; use the device's flash page size (default 2048)")
    table = bytearray(HEADER_SIZE + ENTRY_SIZE * len(entries))
    blobs: list[bytes] = []
    offset = len(table)
    stored: dict[tuple[bytes, Compression], int] = {}
    for i, e in enumerate(entries):
        if not isinstance(e, DtEntry):
            raise DtboImageError(f"entry {i} is a {type(e).__name__}, not a DtEntry")
        if not e.data:
            raise DtboImageError(f"entry {i} has no data; an empty device tree cannot be stored")
        words = [_u32(e.id, f"entry {i} id"), _u32(e.rev, f"entry {i} rev")]
        if len(e.custom) != 4:
            raise DtboImageError(f"entry {i} custom has {len(e.custom)} words, it needs 4")
        words += [_u32(c, f"entry {i} custom[{k}]") for k, c in enumerate(e.custom)]
        # the vendor's entries pass through untouched: flags are only interpreted to share
        key = (bytes(e.data), e.compression(version)) if share_identical else None
        at = stored.get(key) if key is not None else None
        if at is None:
            at = offset
            if key is not None:
                stored[key] = at
            blobs.append(bytes(e.data))
            offset += len(e.data)
        _WORDS.pack_into(table, HEADER_SIZE + i * ENTRY_SIZE, len(e.data), at, *words)
    if offset > U32_MAX:
        raise DtboImageError(f"the image would be {offset} bytes; a DT table holds < 4 GiB")
    _WORDS.pack_into(
        table,
        0,
        DT_TABLE_MAGIC,
        offset,
        HEADER_SIZE,
        ENTRY_SIZE,
        len(entries),
        HEADER_SIZE,
        page_size,
        version,
    )
    return bytes(table) + b"".join(blobs)


def write_dt_table(
    entries: list[DtEntry],
    out: Path,
    page_size: int = DEFAULT_PAGE_SIZE,
    version: int = 0,
    *,
    share_identical: bool = False,
) -> Path:
    """Write a dtbo image holding `entries` in order; out appears whole or not at all.

    Byte for byte what `mkdtboimg.py create out --page_size=P --version=V f1 --id=.. ...`
    writes for files with these contents and entry options (for a compressed v1 entry, pass
    `compress(file, how)` as data and the flag in custom[0]). Identical data is stored once
    only with `share_identical=True` -- mkdtboimg shares only when one *path* is listed twice,
    so two files with equal contents are stored twice by default, as it does.
    """
    data = build_dt_table(entries, page_size, version, share_identical=share_identical)
    out = Path(out)
    _atomic_write(out, data)
    return out


# -- the VM DTBO -------------------------------------------------------------------------------

_TOP_NODE = re.compile(r"^\t(?:[\w,.+-]+: )*([^\s{]+) \{$", re.M)
_OVERLAY = re.compile(r"^\t\t(?:[\w,.+-]+: )*__overlay__ \{$", re.M)
_SYMBOLS = re.compile(r"^\t__symbols__ \{\n(.*?)^\t\};", re.M | re.S)
_SYMBOL = re.compile(r'^\t\t([\w,.+-]+) = "([^"]*)";', re.M)


def check_vm_dtbo(path: Path) -> bytes:
    """The VM DTBO's bytes, once it is shown to be what AVF can use; DtboImageError if not.

    Checked: an FDT (magic 0xd00dfeed, totalsize within the file) that dtc decompiles; an
    overlay (a fragment with `__overlay__`, or `__fixups__`) -- AVF applies it onto the VM's
    DT; `__symbols__` with at least one label inside an `__overlay__` -- AVF and crosvm find
    assignable devices only by label (`--vfio ...,dt-symbol=`), which `dtc -@` records there.
    """
    path = Path(path)
    buf = _read(path, "VM DTBO")
    if len(buf) < FDT_HEADER_SIZE or struct.unpack_from(">I", buf)[0] != FDT_MAGIC:
        magic = f"{struct.unpack_from('>I', buf)[0]:#010x}" if len(buf) >= 4 else "missing"
        hint = (
            "; it is already a dtbo partition image -- pass the single overlay it should hold"
            if len(buf) >= 4 and struct.unpack_from(">I", buf)[0] == DT_TABLE_MAGIC
            else ""
        )
        raise DtboImageError(
            f"VM DTBO '{path}' is not a flattened device tree: magic {magic}, expected "
            f"0xd00dfeed{hint}; compile the overlay with `dtc -@ -I dts -O dtb` "
            "(guest.crosvm.compile_dtbo does)"
        )
    totalsize = struct.unpack_from(">I", buf, 4)[0]
    if not FDT_HEADER_SIZE <= totalsize <= len(buf):
        raise DtboImageError(
            f"VM DTBO '{path}' is truncated or damaged: its FDT header says {totalsize} bytes, "
            f"the file has {len(buf)}; compile it again"
        )
    r = subprocess.run(
        [require("dtc"), "-q", "-I", "dtb", "-O", "dts", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise DtboImageError(
            f"VM DTBO '{path}' does not decompile with dtc (a damaged blob):\n    "
            f"{r.stderr.strip()[-600:]}"
        )
    dts = r.stdout
    top = set(_TOP_NODE.findall(dts))
    if not (_OVERLAY.search(dts) or "__fixups__" in top):
        raise DtboImageError(
            f"VM DTBO '{path}' is a device tree but not an overlay (no fragment with "
            "__overlay__, no __fixups__); AVF overlays it onto the VM's DT, so write the "
            "source with `/plugin/;` and devices under `&{/}`, compiled with `dtc -@`"
        )
    m = _SYMBOLS.search(dts)
    symbols = dict(_SYMBOL.findall(m.group(1))) if m else {}
    if not any("/__overlay__/" in target for target in symbols.values()):
        what = "has no __symbols__" if not symbols else "has no label inside an __overlay__"
        raise DtboImageError(
            f"VM DTBO '{path}' {what}: AVF and crosvm find assignable devices by their label "
            "(`--vfio ...,dt-symbol=LABEL`) through __symbols__; label the device nodes under "
            "`&{/}` and compile with `dtc -@`"
        )
    return buf


def with_vm_dtbo(
    vendor_dtbo_img: Path,
    vm_dtbo: Path,
    out: Path,
    *,
    entry_id: int = VM_DTBO_ID,
) -> Path:
    """The vendor's dtbo.img with the VM DTBO appended as its own, last entry; returns out.

    The vendor entries (the host's overlays) are kept exactly: same stored bytes, id, rev,
    custom/flags, same order -- so their indices, which the bootloader may select by, do not
    move. The header keeps the vendor's page_size and version. The VM DTBO is checked
    (`check_vm_dtbo`) and stored uncompressed (flags 0) -- Android's vfio_handler copies the
    entry's raw bytes to crosvm. Its index is len(vendor entries): with a GBL bootloader that is
    what androidboot.hypervisor.vm_dtbo_idx reports.

    entry_id: VM_DTBO_ID (0x8000_0000, GBL's bit-31 VM DTBO flag) by default; a bootloader
    that finds the VM DTBO another way may want another id. The result carries no AVB footer
    (bytes after the vendor table's total_size are not copied): a device that verifies dtbo
    against vbmeta boots it only unlocked, or after re-signing (avbtool add_hash_footer).
    """
    vendor_dtbo_img, vm_dtbo, out = Path(vendor_dtbo_img), Path(vm_dtbo), Path(out)
    header, vendor = _parse(_read(vendor_dtbo_img, "vendor dtbo image"), vendor_dtbo_img)
    _u32(entry_id, "entry_id")
    already = [i for i, e in enumerate(vendor) if e.is_vm_dtbo]
    if already:
        raise DtboImageError(
            f"vendor dtbo image '{vendor_dtbo_img}' already has a VM DTBO entry (index "
            f"{already[0]}, id {vendor[already[0]].id:#x}, bit 31 set); start from the "
            "vendor's original dtbo.img so the table ends with exactly one VM DTBO"
        )
    data = check_vm_dtbo(vm_dtbo)
    entries = [*vendor, DtEntry(data, id=entry_id)]
    return write_dt_table(entries, out, page_size=header.page_size, version=header.version)
