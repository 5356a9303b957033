"""Android boot.img: build it with Debian's mkbootimg, take it apart with unpack_bootimg.

Why wrap the tools rather than call them: both are AOSP Python scripts (Debian package
`mkbootimg`, 1:29.0.6) that answer bad input with a traceback — an oversized cmdline, an empty
dtb for header v2, an os_version out of range — or, worse, with nothing: unpack_bootimg exits 0
on a file that is not a boot image, and a dtb passed with header v0/v1/v3 is dropped silently.
Every such case is checked here first and reported as a BootImageError that says what to change.

Measured facts about the 29.0.6 tools that shape this module:

- mkbootimg writes header versions 0–3 only (`> 3` raises). Version 4 (GKI, Pixel) is version
  3 plus a `signature_size` word after the cmdline, so it is written as v3 and the header words
  are fixed up (`header_version`, `header_size`); the payload layout is identical.
- Its v3 `header_size` is 1596; AOSP's bootimg.h says 1580 (v4: 1584). Corrected here.
- Header v2 requires a non-empty dtb; v3/v4 carry none (it lives in vendor_boot).
- mkbootimg accepts a cmdline of up to 1536 characters, filling both fields with no NUL; AOSP's
  current mkbootimg and bootloaders want it NUL-terminated, so 1535 bytes is the limit here.
- unpack_bootimg has no `--format=mkbootimg`: it takes `--boot_img FILE --out DIR`, writes
  `kernel`, `ramdisk`, `second`, `recovery_dtbo`, `dtb` into DIR and prints `key: value` lines.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import SetupError, VfioPlatformError

PACKAGE = "mkbootimg"  # the Debian package that carries both mkbootimg and unpack_bootimg
BOOT_MAGIC = b"ANDROID!"
VENDOR_BOOT_MAGIC = b"VNDRBOOT"
HEADER_VERSIONS = (0, 1, 2, 3, 4)
V3_PAGE_SIZE = 4096  # fixed for v3/v4; v0-v2 state theirs in the header
CMDLINE_MAX = 1535  # 512 + 1024 (v0-v2) or 1536 (v3/v4) bytes, NUL included
# v3/v4 header: magic, kernel_size, ramdisk_size, os_version, header_size, reserved[4],
# header_version, cmdline[1536] (+ signature_size for v4)
_V3_HEADER_SIZE_OFFSET = 20
_V3_HEADER_VERSION_OFFSET = 40
_V3_HEADER_SIZES = {3: 1580, 4: 1584}
_PARTS = ("kernel", "ramdisk", "second", "recovery_dtbo", "dtb")


class BootImageError(VfioPlatformError):
    """A boot.img that cannot be built from these inputs, or a file that is not a boot.img."""


@dataclass(frozen=True)
class BootImage:
    """What a boot.img holds, as unpack_bootimg saw it; absent parts are None."""

    image: Path
    header_version: int
    cmdline: str
    kernel: Path
    ramdisk: Path | None
    dtb: Path | None
    os_version: str | None = None
    os_patch_level: str | None = None
    page_size: int = 0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    raise SetupError(
        f"required tool '{name}' not found on PATH; install the Debian package '{PACKAGE}' "
        "(it provides mkbootimg and unpack_bootimg; ci/setup installs it)"
    )


def _check_input(what: str, path: Path) -> None:
    if not path.is_file():
        raise BootImageError(f"boot.img {what} '{path}' does not exist or is not a regular file")


def _check_cmdline(cmdline: str) -> None:
    bad = [c for c in cmdline if not (" " <= c <= "~")]
    if bad:
        raise BootImageError(
            f"boot.img cmdline contains {bad[0]!r}: only printable ASCII fits the header "
            "(no newlines, NUL or non-ASCII); quote values inside the cmdline instead"
        )
    if len(cmdline) > CMDLINE_MAX:
        raise BootImageError(
            f"boot.img cmdline is {len(cmdline)} bytes, the header holds at most {CMDLINE_MAX} "
            f"(1536 including the terminating NUL); shorten it by {len(cmdline) - CMDLINE_MAX} "
            "bytes, e.g. move options into the ramdisk's init or a bootconfig"
        )


def _check_os_version(value: str) -> None:
    m = re.fullmatch(r"(\d{1,3})(?:\.(\d{1,3})(?:\.(\d{1,3}))?)?", value)
    if not m or any(int(g) >= 128 for g in m.groups() if g is not None):
        raise BootImageError(
            f"boot.img os_version '{value}' is not A[.B[.C]] with each part below 128 "
            "(e.g. '15.0.0')"
        )


def _check_os_patch_level(value: str) -> None:
    m = re.fullmatch(r"(\d{4})-(\d{2})(?:-\d{2})?", value)
    if not m or not (2000 <= int(m.group(1)) < 2128 and 1 <= int(m.group(2)) <= 12):
        raise BootImageError(
            f"boot.img os_patch_level '{value}' is not YYYY-MM[-DD] with a year 2000-2127 "
            "(e.g. '2025-01-05')"
        )


def _check_dtb(header_version: int, dtb: Path | None) -> None:
    if header_version == 2 and dtb is None:
        raise BootImageError(
            "boot.img header v2 needs a dtb (mkbootimg rejects an empty one); pass dtb=, or "
            "use header v4 with the dtb in vendor_boot"
        )
    if header_version in (3, 4) and dtb is not None:
        raise BootImageError(
            f"boot.img header v{header_version} has no dtb (GKI puts it in vendor_boot, or the "
            "bootloader supplies it); drop dtb=, or use header_version=2 to carry it"
        )
    if header_version in (0, 1) and dtb is not None:
        raise BootImageError(
            f"boot.img header v{header_version} has no dtb field (mkbootimg would drop it "
            "silently); use header_version=2"
        )
    if dtb is not None:
        _check_input("dtb", dtb)
        if dtb.stat().st_size == 0:
            raise BootImageError(f"boot.img dtb '{dtb}' is empty")


def _fix_v3_header(path: Path, header_version: int) -> None:
    """Write the v3/v4 header words mkbootimg 29.0.6 gets wrong or cannot write (see above)."""
    with open(path, "r+b") as f:
        f.seek(_V3_HEADER_SIZE_OFFSET)
        f.write(struct.pack("<I", _V3_HEADER_SIZES[header_version]))
        f.seek(_V3_HEADER_VERSION_OFFSET)
        f.write(struct.pack("<I", header_version))
        # v4's signature_size (offset 1580) stays 0: mkbootimg zero-pads the header page.


def make_boot_img(
    kernel: Path,
    ramdisk: Path,
    cmdline: str,
    out: Path,
    *,
    dtb: Path | None = None,
    header_version: int = 2,
    os_version: str | None = None,
    os_patch_level: str | None = None,
) -> Path:
    """Build out from the parts; out appears complete or not at all (temp file + rename).

    Header v2 (the QEMU rack's bootloader, older Pixels) carries the dtb; v4 (GKI, current
    Pixels) has none.
    """
    if header_version not in HEADER_VERSIONS:
        raise BootImageError(
            f"boot.img header version {header_version} is not supported; choose one of "
            f"{', '.join(map(str, HEADER_VERSIONS))} (2 carries a dtb, 4 is GKI/Pixel)"
        )
    _check_input("kernel", kernel)
    _check_input("ramdisk", ramdisk)
    _check_dtb(header_version, dtb)
    _check_cmdline(cmdline)
    if os_version is not None:
        _check_os_version(os_version)
    if os_patch_level is not None:
        _check_os_patch_level(os_patch_level)
    mkbootimg = _tool("mkbootimg")

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [
        mkbootimg,
        f"--kernel={kernel}",
        f"--ramdisk={ramdisk}",
        f"--cmdline={cmdline}",
        f"--header_version={min(header_version, 3)}",
        f"--output={tmp}",
    ]
    if dtb is not None:
        cmd.append(f"--dtb={dtb}")
    if os_version is not None:
        cmd.append(f"--os_version={os_version}")
    if os_patch_level is not None:
        cmd.append(f"--os_patch_level={os_patch_level}")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise BootImageError(
                f"mkbootimg failed building {out} (exit {r.returncode}):\n"
                f"    {' '.join(cmd)}\n    {r.stderr.strip()[-800:]}"
            )
        if header_version >= 3:
            _fix_v3_header(tmp, header_version)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would follow the image to other users
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _read_magic(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(8)
    except OSError as e:
        raise BootImageError(f"cannot read boot image '{path}': {e.strerror}") from None


def _parse_report(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, value = line.partition(": ")
        if sep and key not in fields:
            fields[key] = value
    return fields


def unpack_boot_img(path: Path, outdir: Path) -> BootImage:
    """Split a boot.img into its parts in outdir, and say what it held.

    Why check the magic and the part sizes here: unpack_bootimg exits 0 on a file that is not a
    boot image and writes short parts from a truncated one.
    """
    magic = _read_magic(path)
    if magic == VENDOR_BOOT_MAGIC:
        raise BootImageError(
            f"'{path}' is a vendor_boot image (magic VNDRBOOT), not a boot.img; pass the boot "
            "partition's image"
        )
    if magic != BOOT_MAGIC:
        raise BootImageError(
            f"'{path}' is not an Android boot image: it starts with {magic!r}, a boot.img "
            f"starts with {BOOT_MAGIC!r} (build one with make_boot_img)"
        )
    unpack = _tool("unpack_bootimg")
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=outdir) as tmpdir:
        cmd = [unpack, "--boot_img", str(path), "--out", tmpdir]
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if r.returncode != 0:
            raise BootImageError(
                f"unpack_bootimg could not read '{path}' (exit {r.returncode}); the file is "
                f"damaged or truncated:\n    {r.stderr.strip()[-800:]}"
            )
        fields = _parse_report(r.stdout)
        try:
            version = int(fields["boot image header version"])
            sizes = {
                "kernel": int(fields["kernel_size"]),
                "ramdisk": int(fields["ramdisk size"]),
                "dtb": int(fields.get("dtb size", "0")),
            }
        except (KeyError, ValueError):
            raise BootImageError(
                f"unpack_bootimg printed no header for '{path}'; its output was:\n"
                f"    {r.stdout.strip()[-800:]}"
            ) from None
        for name in _PARTS:  # parts from an earlier unpack must not pass as this one's
            (outdir / name).unlink(missing_ok=True)
        parts: dict[str, Path | None] = {}
        for name, size in sizes.items():
            src = Path(tmpdir) / name
            if size == 0:
                parts[name] = None
                continue
            got = src.stat().st_size if src.exists() else 0
            if got != size:
                raise BootImageError(
                    f"'{path}' is truncated: its header says the {name} is {size} bytes, the "
                    f"file holds {got}; rebuild or re-download it"
                )
            parts[name] = outdir / name
            os.replace(src, outdir / name)
    if parts["kernel"] is None:
        raise BootImageError(f"'{path}' holds no kernel (kernel_size 0)")
    cmdline = fields.get("command line args", "") + fields.get("additional command line args", "")
    return BootImage(
        image=path,
        header_version=version,
        cmdline=cmdline,
        kernel=parts["kernel"],
        ramdisk=parts["ramdisk"],
        dtb=parts["dtb"],
        os_version=fields.get("os version"),
        os_patch_level=fields.get("os patch level"),
        page_size=int(fields.get("page size", V3_PAGE_SIZE)),
    )


def _describe(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{path.stat().st_size} bytes, sha256 {h.hexdigest()[:16]}"


def verify_round_trip(
    image: Path,
    outdir: Path,
    *,
    kernel: Path,
    ramdisk: Path,
    cmdline: str,
    dtb: Path | None = None,
) -> BootImage:
    """Unpack image and require exactly these parts back, so nothing boots that was not asked.

    Why before booting: a boot.img is opaque once on a board; a stale or mis-assembled one
    shows up as a kernel that is not the one under test, far from the cause.
    """
    got = unpack_boot_img(image, outdir)
    problems = []
    wanted = {"kernel": kernel, "ramdisk": ramdisk, "dtb": dtb}
    for name, want in wanted.items():
        have: Path | None = getattr(got, name)
        if want is not None and want.stat().st_size == 0:
            want = None  # an empty part is stored as absent
        if want is None and have is None:
            continue
        if want is None or have is None:
            problems.append(
                f"{name}: expected {'none' if want is None else want}, "
                f"the image has {'none' if have is None else _describe(have)}"
            )
        elif not filecmp.cmp(want, have, shallow=False):
            problems.append(
                f"{name}: the image's ({_describe(have)}) differs from {want} ({_describe(want)})"
            )
    if got.cmdline != cmdline:
        problems.append(f"cmdline: expected {cmdline!r}, the image has {got.cmdline!r}")
    if problems:
        raise BootImageError(
            f"boot image '{image}' does not hold what it was built from; rebuild it:\n    "
            + "\n    ".join(problems)
        )
    return got
