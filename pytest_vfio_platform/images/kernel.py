"""Build an arm64 kernel Image from (source, patch series, config fragment), cached.

Why a persistent workspace per (source, fragment): switching between the `patched` and
`stock` variants, or editing one patch, must rebuild only what changed (seconds), not the
whole kernel. workspace.prepare brings the tree back to the pristine source plus the series
before each build, rewriting only the files that differ, so make rebuilds what changed and
never misses a reverted file.
"""

from __future__ import annotations

import codecs
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BuildError, SetupError
from .cache import ArtifactCache, Hasher
from .progress import Progress, run_logged, stderr_progress
from .source import (
    default_source,
    manifest_digest,
    pristine_tree,
    source_digest,
    tree_manifest,
)
from .tools import require
from .workspace import prepare

PROJECT = Path(__file__).resolve().parents[1]  # the package: kernel/ ships in it
PATCH_DIR = PROJECT / "kernel" / "patches"
CONFIG_DIR = PROJECT / "kernel" / "config"
RECIPE_VERSION = "kernel-1"
BUILD_SUBDIR = "_vfio_build"
CROSS = "aarch64-linux-gnu-"
ARM64_MAGIC = b"ARM\x64"


@dataclass(frozen=True)
class KernelSpec:
    """What to build. variant names the patch set: 'patched' (kernel/patches) or 'stock'."""

    variant: str = "patched"
    fragment: Path = CONFIG_DIR / "l1.config"
    source: Path | None = None
    patches: tuple[Path, ...] | None = None  # None: the variant's default

    def patch_list(self) -> tuple[Path, ...]:
        if self.patches is not None:
            return self.patches
        if self.variant == "stock":
            return ()
        if self.variant == "patched":
            return tuple(sorted(PATCH_DIR.glob("*.patch")))
        raise SetupError(f"unknown kernel variant '{self.variant}' (expected patched or stock)")


@dataclass
class KernelArtifact:
    image: Path
    config: Path
    release: str
    key: str
    variant: str
    patches: list[str] = field(default_factory=list)
    built: bool = False  # False on a cache hit


def toolchain_id() -> str:
    gcc = require(CROSS + "gcc")
    out = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else gcc


def kernel_key(spec: KernelSpec, src_digest: str, toolchain: str) -> Hasher:
    """Everything that determines the Image bytes, and nothing else."""
    h = Hasher("kernel").add("recipe", RECIPE_VERSION).add("source", src_digest)
    h.add("toolchain", toolchain).add("variant", spec.variant)
    if not spec.fragment.is_file():
        raise SetupError(f"config fragment {spec.fragment} not found")
    h.add("fragment", spec.fragment.read_bytes())
    for i, p in enumerate(spec.patch_list()):
        h.add(f"patch{i}:{p.name}", p.read_bytes())
    return h


def parse_fragment(path: Path) -> dict[str, str]:
    """CONFIG_X -> value ('n' for '# CONFIG_X is not set'), with clear errors on junk."""
    want: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        m = re.fullmatch(r"# (CONFIG_\w+) is not set", line)
        if m:
            want[m.group(1)] = "n"
            continue
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"(CONFIG_\w+)=(.*)", line)
        if not m:
            raise SetupError(f"{path}:{n}: not a Kconfig assignment: {raw!r}")
        want[m.group(1)] = m.group(2)
    return want


def verify_config(fragment: Path, dotconfig: Path, exempt: frozenset[str] = frozenset()) -> None:
    """Every symbol the fragment asks for must survive olddefconfig with the same value
    (but those in exempt: symbols the shipped series defines, in a build without it)."""
    want = parse_fragment(fragment)
    have = parse_fragment_like_config(dotconfig)
    lost = []
    for sym, val in want.items():
        if sym in exempt:
            continue
        got = have.get(sym, "n")
        if got != val:
            lost.append(f"{sym}={val} (final .config: {'not set' if got == 'n' else got})")
    if lost:
        raise BuildError(
            f"config fragment {fragment.name}: {len(lost)} symbol(s) lost in the merge "
            "(missing dependency or misspelt?):\n    " + "\n    ".join(lost),
            str(dotconfig),
        )


def parse_fragment_like_config(dotconfig: Path) -> dict[str, str]:
    have: dict[str, str] = {}
    for line in dotconfig.read_text().splitlines():
        m = re.fullmatch(r"(CONFIG_\w+)=(.*)", line)
        if m:
            have[m.group(1)] = m.group(2)
    return have


def check_arm64_image(path: Path) -> None:
    """Reject anything that is not an arm64 Image before QEMU turns it into a silent hang.

    The message says what the file looks like instead (a vmlinux ELF, an Image.gz, an x86
    bzImage...), because the fix differs: take arch/arm64/boot/Image, gunzip, or rebuild.
    """
    if not path.exists():
        raise SetupError(
            f"--kernel {path}: no such file; pass a built arm64 Image, or patched|stock"
        )
    if not path.is_file():
        raise SetupError(
            f"--kernel {path}: not a regular file; pass the Image file itself "
            "(arch/arm64/boot/Image of an arm64 kernel build), or patched|stock"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as e:
        raise SetupError(f"--kernel {path}: cannot read it ({e.strerror})") from None
    if len(head) >= 64 and head[56:60] == ARM64_MAGIC:
        return
    raise SetupError(
        f"--kernel {path}: not an arm64 kernel Image ({_what_kernel(head)}; no 'ARM\\x64' "
        "magic at offset 56); pass arch/arm64/boot/Image of an arm64 build (not vmlinux, "
        "not a compressed image), or --kernel=patched|stock to build one"
    )


def _what_kernel(head: bytes) -> str:
    """A guess at what a rejected --kernel file is, for the error message."""
    if head[:4] == b"\x7fELF":
        return "an ELF file: vmlinux? the bootable file is arch/arm64/boot/Image"
    if head[:2] == b"\x1f\x8b":
        return "gzip-compressed: Image.gz? gunzip it first"
    if head[:4] == b"\x27\x05\x19\x56":
        return "a U-Boot uImage: pass the Image it wraps"
    if head[0x202:0x206] == b"HdrS":
        return "an x86 bzImage: this board is arm64"
    if len(head) < 64:
        return f"only {len(head)} bytes long"
    if head[:2] == b"MZ" and head[4:8] == b"zimg":
        return "an EFI zboot image (vmlinuz.efi): build the plain Image target"
    if head[:2] == b"MZ":
        return "a PE/EFI file without the arm64 Image header"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head)  # a cut-off last character is fine
    except UnicodeDecodeError:
        return "an unrecognised binary"
    return "a text file" if b"\0" not in head else "an unrecognised binary"


def _make_env(cache: ArtifactCache) -> dict[str, str]:
    return {
        "ARCH": "arm64",
        "CROSS_COMPILE": CROSS,
        "CCACHE_DIR": os.environ.get("PYTEST_VFIO_PLATFORM_CCACHE", str(cache.root / "ccache")),
        "CCACHE_MAXSIZE": "5G",
        "CCACHE_COMPILERCHECK": "content",
        "CCACHE_NOHASHDIR": "1",
        "KBUILD_BUILD_TIMESTAMP": "1970-01-01 00:00:00 UTC",
        "KBUILD_BUILD_USER": "vfio",
        "KBUILD_BUILD_HOST": "pytest-vfio-platform",
        "LC_ALL": "C",
    }


def apply_patches(tree: Path, patches: tuple[Path, ...], log: Path) -> list[str]:
    """Apply a series in order; a failing patch is named with the file and hunk."""
    patch = require("patch")
    touched: list[str] = []
    for p in patches:
        args = [patch, "-p1", "--forward", "--batch", "--no-backup-if-mismatch", "-d", str(tree)]
        dry = subprocess.run([*args, "--dry-run", "-i", str(p)], capture_output=True, text=True)
        with open(log, "a") as f:
            f.write(f"$ patch -p1 -i {p}\n{dry.stdout}{dry.stderr}")
        if dry.returncode != 0:
            file = ""
            hunks = []
            for line in dry.stdout.splitlines():
                if line.startswith(("patching file", "checking file")):
                    file = line.split(" ", 2)[2]
                m = re.search(r"Hunk #(\d+) FAILED at (\d+)", line)
                if m:
                    hunks.append(f"{file}: hunk #{m.group(1)} at line {m.group(2)}")
            detail = "; ".join(hunks) or (dry.stdout + dry.stderr).strip()[-300:]
            raise BuildError(
                f"patch {p.name} does not apply to the kernel source: {detail}", str(log)
            )
        r = subprocess.run([*args, "-i", str(p)], capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError(f"patch {p.name} failed: {r.stdout[-300:]}", str(log))
        touched += _touched(r.stdout)
    return touched


def _touched(out: str) -> list[str]:
    """Every path GNU patch wrote or removed: files, symlinks, and both ends of a rename or
    a copy (`patching file new.c (renamed from old.c)`), so the next build can revert them."""
    paths: list[str] = []
    for line in out.splitlines():
        m = re.match(
            r"patching (?:file|symbolic link) (.+?)(?: \((?:renamed|copied) from (.+)\))?$", line
        )
        if m:
            paths += [g.strip("'") for g in m.groups() if g]
    return paths


def workspace_id(src: Path, src_digest: str) -> str:
    """A tarball's workspace is its content's; a source directory keeps one workspace
    across edits (named by its path), so a one-line edit rebuilds one file, not a tree."""
    if src.is_dir():
        return "dir-" + hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:12]
    return src_digest[:12]


def patch_sections(patches: tuple[Path, ...]) -> list[tuple[str, str]]:
    """(path, that file's part of the patch) for every file a series touches, in order. A
    file's part starts at its `--- a/PATH` / `+++ b/PATH` header (git or plain diff); the
    path is the new one, or the old one for a deleted file."""
    out = []
    for p in patches:
        for part in re.split(r"(?m)^(?=--- )", p.read_text(errors="replace")):
            m = re.match(r"--- (\S+)[^\n]*\n\+\+\+ (\S+)", part)
            if m:
                old, new = m.groups()
                path = old if new == "/dev/null" else new
                out.append((path.split("/", 1)[1] if path[:2] in ("a/", "b/") else path, part))
    return out


def _kconfig_parts(patches: tuple[Path, ...]) -> list[str]:
    return [part for path, part in patch_sections(patches) if Path(path).name.startswith("Kconfig")]


def kconfig_symbols(patches: tuple[Path, ...]) -> frozenset[str]:
    """CONFIG_ names a series adds (`+config FOO` in its Kconfig hunks)."""
    return frozenset(
        "CONFIG_" + m.group(1)
        for part in _kconfig_parts(patches)
        for m in re.finditer(r"(?m)^\+\s*(?:menu)?config\s+(\w+)", part)
    )


def kconfig_digest(patches: tuple[Path, ...]) -> str:
    """Digest of the hunks of a series that touch Kconfig files: all that can change what
    merge_config makes of the fragment."""
    h = hashlib.sha256()
    for part in _kconfig_parts(patches):
        h.update(part.encode())
    return h.hexdigest()


def source_kconfig_digest(manifest: dict[str, str]) -> str:
    """Digest of the source's own Kconfig files and kconfig tool: an edited --kernel-src
    tree reconfigures from allnoconfig, as a fresh workspace would, not by syncconfig."""
    h = hashlib.sha256()
    for rel, entry in manifest.items():
        if Path(rel).name.startswith("Kconfig") or rel.startswith("scripts/kconfig/"):
            h.update(f"{rel}\0{entry}\n".encode())
    return h.hexdigest()


def configure(
    tree: Path,
    build: Path,
    fragment: Path,
    log: Path,
    progress: Progress,
    exempt: frozenset[str] = frozenset(),
) -> None:
    """allnoconfig + fragment via the kernel's merge_config.sh, then verify every symbol.

    merge_config.sh only warns about requested values that did not survive; verify_config
    turns that into an error naming each lost symbol.
    """
    build.mkdir(parents=True, exist_ok=True)
    run_logged(
        f"config {fragment.name}",
        [
            "sh",
            str(tree / "scripts/kconfig/merge_config.sh"),
            "-n",
            "-O",
            str(build),
            str(fragment),
        ],
        log,
        progress,
        cwd=tree,
        env={"ARCH": "arm64", "CROSS_COMPILE": CROSS, "LC_ALL": "C"},
    )
    verify_config(fragment, build / ".config", exempt)


def build_kernel(
    spec: KernelSpec,
    cache: ArtifactCache | None = None,
    progress: Progress = stderr_progress,
    jobs: int | None = None,
) -> KernelArtifact:
    """The Image for spec, from the cache or built now."""
    cache = cache or ArtifactCache()
    for tool in ("aarch64-linux-gnu-gcc", "make", "flex", "bison", "bc", "ccache", "rsync"):
        require(tool)
    src = (spec.source or default_source()).resolve()
    src_digest = source_digest(src, cache)
    toolchain = toolchain_id()
    h = kernel_key(spec, src_digest, toolchain)
    key = h.hexdigest()
    patches = spec.patch_list()
    hit = cache.lookup("kernel", key)
    if hit:
        return _artifact(hit, key, spec, patches, built=False)

    workspace = cache.root / "work" / f"{workspace_id(src, src_digest)}-{spec.fragment.stem}"
    logs = cache.root / "logs"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = logs / f"kernel-{spec.variant}-{key[:12]}-{stamp}.log"

    def build(out: Path) -> dict:
        t0 = time.monotonic()
        log.parent.mkdir(parents=True, exist_ok=True)
        progress(
            f"building kernel '{spec.variant}' ({spec.fragment.name}, {len(patches)} patches); log: {log}"
        )
        pristine = pristine_tree(src, src_digest, cache)
        # The build directory sits directly inside the tree so kbuild uses srctree=".." and
        # every path in a compiler command is relative: ccache then hits across workspaces.
        tree = workspace / "tree"
        bdir = tree / BUILD_SUBDIR
        manifest = tree_manifest(pristine, cache)
        if src.is_dir() and manifest_digest(manifest) != src_digest:
            raise BuildError(
                f"--kernel-src {src} changed while this build waited for the workspace: "
                "the cache key would not describe what is built; run again"
            )
        prepare(
            pristine,
            manifest,
            tree,
            lambda t: apply_patches(t, patches, log),
            log,
            keep=BUILD_SUBDIR,
        )
        # the fragment enables the series' own symbols; a build without any series (stock)
        # cannot have them, and that is the point of it, not a lost symbol (a series of
        # one's own must still define them)
        exempt = (
            kconfig_symbols(tuple(sorted(PATCH_DIR.glob("*.patch"))))
            if not patches
            else frozenset()
        )
        # merge_config runs when the fragment, the Kconfig part of the series or the
        # source's own Kconfig changes (a series that only edits C, such as a mutant, keeps
        # the configuration); the result is verified against the fragment after every build
        # either way, so a symbol lost to a Kconfig change is still named.
        cfg_stamp = bdir / ".vfio-config-stamp"
        cfg_id = ":".join(
            (h.parts["fragment"], kconfig_digest(patches), source_kconfig_digest(manifest))
        )
        if (
            not cfg_stamp.is_file()
            or cfg_stamp.read_text() != cfg_id
            or not (bdir / ".config").is_file()
        ):
            configure(tree, bdir, spec.fragment, log, progress, exempt)
            cfg_stamp.write_text(cfg_id)
        n = jobs or os.cpu_count() or 2
        env = _make_env(cache)
        run_logged(
            f"kernel '{spec.variant}' make Image",
            [
                "make",
                f"O={bdir}",
                f"-j{n}",
                f"CC=ccache {CROSS}gcc",
                f"LOCALVERSION=-{spec.variant}",
                "Image",
            ],
            log,
            progress,
            cwd=tree,
            env=env,
        )
        verify_config(spec.fragment, bdir / ".config", exempt)
        shutil.copyfile(bdir / "arch/arm64/boot/Image", out / "Image")
        shutil.copyfile(bdir / ".config", out / "config")
        release = (bdir / "include/config/kernel.release").read_text().strip()
        (out / "release").write_text(release + "\n")
        progress(f"kernel '{spec.variant}' {release} built in {time.monotonic() - t0:.0f}s")
        return {"release": release, "variant": spec.variant, "patches": [p.name for p in patches]}

    # before the workspace lock, whose mkdir would otherwise be the first write to an
    # unwritable or full cache and fail with a bare OSError
    cache.ensure_writable()
    ws_lock = cache.root / "locks"
    ws_lock.mkdir(parents=True, exist_ok=True)
    with open(ws_lock / f"workspace-{workspace.name}.lock", "w") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        art = cache.get_or_build("kernel", key, build, h.parts)
    return _artifact(art, key, spec, patches, built=True)


def _artifact(
    d: Path, key: str, spec: KernelSpec, patches: tuple[Path, ...], built: bool
) -> KernelArtifact:
    return KernelArtifact(
        image=d / "Image",
        config=d / "config",
        release=(d / "release").read_text().strip(),
        key=key,
        variant=spec.variant,
        patches=[p.name for p in patches],
        built=built,
    )


UAPI_INPUTS = (
    "include/uapi/",
    "arch/arm64/include/uapi/",
    "arch/arm64/tools/",
    "scripts/",
    "usr/",
)
UAPI_INPUT_FILES = ("Makefile", "arch/arm64/Makefile", "arch/arm64/kernel/Makefile.syscalls")


def uapi_inputs_digest(manifest: dict[str, str]) -> str:
    """Digest of the files `make headers_install` reads: the uapi trees, the scripts that
    process them and the makefiles that drive it."""
    h = hashlib.sha256()
    for rel, entry in manifest.items():
        if rel.startswith(UAPI_INPUTS) or rel in UAPI_INPUT_FILES:
            h.update(f"{rel}\0{entry}\n".encode())
    return h.hexdigest()


def uapi_headers(
    spec: KernelSpec, cache: ArtifactCache | None = None, progress: Progress = stderr_progress
) -> Path:
    """The source's UAPI headers (make headers_install), for the on-target agent."""
    cache = cache or ArtifactCache()
    src = (spec.source or default_source()).resolve()
    digest = source_digest(src, cache)
    h = Hasher("uapi").add("recipe", RECIPE_VERSION)
    if src.is_dir():  # an edited tree: only what headers_install reads, so a driver edit
        # keeps the headers, the agent and the initramfs built on them
        h.add("source-uapi", uapi_inputs_digest(tree_manifest(src, cache)))
    else:
        h.add("source", digest)

    def build(out: Path) -> dict:
        pristine = pristine_tree(src, digest, cache)
        log = cache.root / "logs" / f"uapi-{h.hexdigest()[:12]}.log"
        run_logged(
            "kernel headers_install",
            [
                "make",
                f"O={out / 'obj'}",
                "ARCH=arm64",
                f"INSTALL_HDR_PATH={out / 'usr'}",
                "headers_install",
            ],
            log,
            progress,
            cwd=pristine,
        )
        shutil.rmtree(out / "obj")
        return {}

    return cache.get_or_build("uapi", h.hexdigest(), build, h.parts) / "usr"
