"""The board (L1) and guest (L2) initramfs: busybox, an /init, the agent, QEMU for L2.

Why initramfs-only boards: boot to a shell in about a second, nothing to corrupt between
tests, and the whole userspace is one cacheable file. The L1 archive carries Debian's arm64
qemu-system-aarch64 10.0.x with its shared-library closure so the board can run a KVM guest;
guest payloads (L2 kernel, initramfs, DTB) are appended as a second cpio archive, which the
kernel unpacks on top, so the base archive stays cached when only the guest changes.
"""

from __future__ import annotations

import stat
from pathlib import Path

from .cache import ArtifactCache, Hasher, file_digest
from .cpio import Entry, file_entry, symlink_entry, text_entry, write_cpio
from .debs import extract, fetch, library_closure, scratch_dir

RECIPE_VERSION = "initramfs-1"
QEMU_RELEASE = "bookworm-backports"

BOARD_PROMPT = "vfio-board# "
GUEST_PROMPT = "vfio-guest# "

INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /mnt /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
export HOME=/root PS1='{prompt}'
mkdir -p /root
echo "{role}: init done, kernel $(uname -r)"
dmesg -n 1
{extra}
while true; do
  setsid cttyhack sh
  echo "{role}: shell exited, respawning"
done
"""


def _busybox(cache: ArtifactCache) -> Path:
    debs = fetch(["busybox-static"], cache)
    h = Hasher("busybox").add("deb", file_digest(debs[0]))

    def build(out: Path) -> dict:
        with scratch_dir(cache) as x:
            extract(debs, Path(x))
            (out / "busybox").write_bytes((Path(x) / "bin/busybox").read_bytes())
        return {"deb": debs[0].name}

    return cache.get_or_build("busybox", h.hexdigest(), build) / "busybox"


def _arm64_tree(
    kind: str, pkg: str, binaries: list[str], release: str | None, cache: ArtifactCache
) -> Path:
    """Some binaries of an arm64 package plus exactly the shared libraries they load."""
    debs = fetch([pkg], cache, release=release, closure=True)
    h = Hasher(kind).add("binaries", " ".join(binaries))
    for d in debs:
        h.add(d.name, d.name)

    def build(out: Path) -> dict:
        libs: dict[str, Path] = {}
        with scratch_dir(cache) as x:
            root = Path(x)
            extract(debs, root)
            (out / "usr/bin").mkdir(parents=True)
            (out / "lib").mkdir()
            for b in binaries:
                src = root / "usr/bin" / b
                (out / "usr/bin" / b).write_bytes(src.read_bytes())
                (out / "usr/bin" / b).chmod(0o755)
                libs.update(library_closure(src, root))
            for so, p in libs.items():
                (out / "lib" / so).write_bytes(p.read_bytes())
        return {"binaries": binaries, "libraries": sorted(libs)}

    return cache.get_or_build(kind, h.hexdigest(), build)


def _qemu_tree(cache: ArtifactCache) -> Path:
    """qemu-system-aarch64 10.0.x (arm64) for the nested guest."""
    return _arm64_tree(
        "qemu-arm64", "qemu-system-arm", ["qemu-system-aarch64"], QEMU_RELEASE, cache
    )


def _dtc_tree(cache: ArtifactCache) -> Path:
    """dtc (arm64): the board writes its guest's DT from the guest machine's own dumpdtb."""
    return _arm64_tree("dtc-arm64", "device-tree-compiler", ["dtc", "fdtget"], None, cache)


def _tree_entries(root: Path, prefix: str = "") -> list[Entry]:
    entries = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            rel = prefix + str(p.relative_to(root))
            entries.append(file_entry(rel, p, 0o755))
    return entries


def _archive(kind: str, h: Hasher, entries_fn, cache: ArtifactCache) -> Path:  # noqa: ANN001
    def build(out: Path) -> dict:
        write_cpio(entries_fn(), out / "initramfs.cpio")
        return {}

    return cache.get_or_build(kind, h.hexdigest(), build, h.parts) / "initramfs.cpio"


def _base_entries(busybox: Path, init: str, agent: Path | None) -> list[Entry]:
    """What every archive has: busybox as the shell, the /init, and the agent."""
    es = [
        file_entry("bin/busybox", busybox, 0o755),
        symlink_entry("bin/sh", "busybox"),
        text_entry("init", init, 0o755),
    ]
    if agent:
        es.append(file_entry("usr/bin/vfio-agent", agent, 0o755))
    return es


def board_initramfs(
    agent: Path | None, cache: ArtifactCache | None = None, with_qemu: bool = True
) -> Path:
    """The L1 archive: busybox shell on the console, the agent, and QEMU for nested guests."""
    cache = cache or ArtifactCache()
    busybox = _busybox(cache)
    qemu = _qemu_tree(cache) if with_qemu else None
    dtc = _dtc_tree(cache) if with_qemu else None
    init = INIT.format(prompt=BOARD_PROMPT, role="vfio-board", extra="")
    h = Hasher("initramfs-l1").add("recipe", RECIPE_VERSION).add("init", init)
    h.add("busybox", file_digest(busybox))
    if qemu and dtc:
        h.add("qemu", qemu.name).add("dtc", dtc.name)
    if agent:
        h.add("agent", file_digest(agent))

    def entries() -> list[Entry]:
        es = _base_entries(busybox, init, agent) + [Entry("root", stat.S_IFDIR | 0o700)]
        if qemu and dtc:
            es += _tree_entries(qemu) + _tree_entries(dtc)
        return es

    return _archive("initramfs-l1", h, entries, cache)


def guest_initramfs(agent: Path | None, cache: ArtifactCache | None = None) -> Path:
    """The L2 archive: busybox and the agent; the guest needs nothing else."""
    cache = cache or ArtifactCache()
    busybox = _busybox(cache)
    init = INIT.format(prompt=GUEST_PROMPT, role="vfio-guest", extra="")
    h = Hasher("initramfs-l2").add("recipe", RECIPE_VERSION).add("init", init)
    h.add("busybox", file_digest(busybox))
    if agent:
        h.add("agent", file_digest(agent))

    def entries() -> list[Entry]:
        return _base_entries(busybox, init, agent)

    return _archive("initramfs-l2", h, entries, cache)


def payload(files: dict[str, Path], cache: ArtifactCache | None = None) -> Path:
    """A second cpio archive with extra files (e.g. the L2 guest's images under /guest)."""
    cache = cache or ArtifactCache()
    h = Hasher("payload").add("recipe", RECIPE_VERSION)
    for name, p in sorted(files.items()):
        h.add(name, file_digest(p))
    return _archive(
        "payload", h, lambda: [file_entry(n, p, 0o644) for n, p in sorted(files.items())], cache
    )
