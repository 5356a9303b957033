"""Turn (lab, variant, kernel choice) into the files a board boots: Image, initramfs, DTB.

Why a separate step: building is the slow, cacheable part; booting is the fast, repeated
part. Everything here is content-addressed, so a warm cache makes this a few lookups.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import LabError, SetupError
from .images.agent import build_agent
from .images.cache import ArtifactCache, Hasher, file_digest
from .images.dtb import board_dtb
from .images.initramfs import board_initramfs, guest_initramfs, payload
from .images.kernel import CONFIG_DIR, KernelSpec, build_kernel, check_arm64_image
from .images.progress import Progress, stderr_progress
from .lab import Lab


@dataclass(frozen=True)
class KernelChoice:
    """--kernel: 'patched', 'stock', or a path to a prebuilt arm64 Image; --kernel-patches
    replaces the shipped series (a mutant, a series under review) for 'patched'."""

    kind: str  # patched | stock | path
    path: Path | None = None
    source: Path | None = None  # --kernel-src
    patch_dir: Path | None = None  # --kernel-patches: None is the shipped series

    @classmethod
    def parse(
        cls, value: str, source: str | None = None, patch_dir: str | None = None
    ) -> KernelChoice:
        src = Path(source).expanduser() if source else None
        pdir = None
        if patch_dir:
            if value != "patched":
                raise SetupError(
                    f"--kernel-patches replaces the series of the patched kernel; it cannot "
                    f"go with --kernel={value}"
                )
            pdir = Path(patch_dir).expanduser().resolve()
            if not (pdir.is_dir() and any(pdir.glob("*.patch"))):
                raise SetupError(f"--kernel-patches {patch_dir}: no *.patch files in {pdir}")
        if value in ("patched", "stock"):
            return cls(value, None, src, pdir)
        p = Path(value).expanduser()
        check_arm64_image(p)
        return cls("path", p.resolve(), src)

    @property
    def patches(self) -> tuple[Path, ...] | None:
        """The --kernel-patches series in name order; None: the variant's own."""
        return tuple(sorted(self.patch_dir.glob("*.patch"))) if self.patch_dir else None

    @property
    def label(self) -> str:
        if self.kind == "path":
            return f"prebuilt:{self.path}"
        return f"{self.kind}:{self.patch_dir}" if self.patch_dir else self.kind


@dataclass(frozen=True)
class BootFiles:
    kernel: Path
    kernel_label: str
    kernel_release: str
    initrd: Path
    dtb: Path | None  # None: the board brings its own (a phone's vendor_boot)
    boot_args: str
    variant: str


def kernel_image(
    choice: KernelChoice, cache: ArtifactCache, progress: Progress
) -> tuple[Path, str]:
    if choice.kind == "path":
        assert choice.path
        return choice.path, "unknown (prebuilt)"
    spec = KernelSpec(variant=choice.kind, source=choice.source, patches=choice.patches)
    art = build_kernel(spec, cache, progress)
    return art.image, art.release


def boot_files(
    lab: Lab,
    variant: str,
    choice: KernelChoice,
    cache: ArtifactCache | None = None,
    progress: Progress = stderr_progress,
) -> BootFiles:
    cache = cache or ArtifactCache()
    if variant not in lab.variants:
        raise LabError(
            f"{lab.path}: board has no variant {variant!r} (have {', '.join(lab.variants)})"
        )
    v = lab.variants[variant]
    image, release = kernel_image(choice, cache, progress)
    agent = build_agent(KernelSpec(source=choice.source), cache, progress)
    initrd = board_initramfs(agent, cache)
    if v.guest:
        initrd = with_guest_payload(initrd, choice, agent, cache, progress)
    # Every -serial the lab declares comes before labgrid's console, so it shapes the DT.
    dump_args = lab.machine_args + ["-serial", "null"] * (len(lab.uart_sockets) + 1)
    # a GKI boot image (header >= 3) carries no DTB: the phone boots its own (vendor_boot)
    gki = lab.rack is not None and lab.rack.bootimg_header >= 3
    dtb = None if gki else board_dtb(dump_args, v.dtb, cache)
    args = " ".join(a for a in (lab.boot_args, v.vfio_args) if a)
    return BootFiles(image, choice.label, release, initrd, dtb, args, variant)


GUEST_DIR = "guest"  # where the L2 images sit on the board


def with_guest_payload(
    base: Path, choice: KernelChoice, agent: Path, cache: ArtifactCache, progress: Progress
) -> Path:
    """base + a second cpio with the L2 kernel and initramfs under /guest (the kernel
    unpacks concatenated archives in order), as one cached file for QEMU's -initrd."""
    l2 = build_kernel(
        KernelSpec(variant="stock", fragment=CONFIG_DIR / "l2.config", source=choice.source),
        cache,
        progress,
    )
    l2_initrd = guest_initramfs(agent, cache)
    extra = payload(
        {f"{GUEST_DIR}/Image": l2.image, f"{GUEST_DIR}/initramfs.cpio": l2_initrd}, cache
    )
    h = Hasher("initrd-combined").add("base", file_digest(base)).add("extra", file_digest(extra))

    def build(out: Path) -> dict:
        with open(out / "initramfs.cpio", "wb") as f:
            for part in (base, extra):
                f.write(part.read_bytes())
        return {"l2_release": l2.release}

    return cache.get_or_build("initrd-combined", h.hexdigest(), build, h.parts) / "initramfs.cpio"
