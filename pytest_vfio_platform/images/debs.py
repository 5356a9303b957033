"""Fetch arm64 Debian packages and pull files (and shared-library closures) out of them.

Why .debs instead of installing arm64 packages on the host: the board's userspace (busybox,
QEMU for the nested guest) must be arm64, and installing arm64 binaries on an amd64 host
would replace the host's own. `apt-get download` only needs the arm64 architecture enabled.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

from ..errors import SetupError
from .cache import ArtifactCache, Hasher, atomic_write
from .tools import require

APT_OPTS = ["-o", "APT::Sandbox::User=root", "-o", "Debug::NoLocking=1"]


def _apt_resolve(pkgs: list[str], release: str | None) -> list[str]:
    """The arm64 packages (name=version) of pkgs and their recursive Depends."""
    cmd = [
        require("apt-cache"),
        *APT_OPTS,
        "depends",
        "--recurse",
        "--no-recommends",
        "--no-suggests",
    ]
    cmd += ["--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"]
    if release:
        cmd += ["-t", release]
    r = subprocess.run(cmd + [f"{p}:arm64" for p in pkgs], capture_output=True, text=True)
    if r.returncode != 0:
        raise SetupError(
            f"apt cannot resolve arm64 packages {pkgs}: {r.stderr.strip()[-300:]}; run ci/setup "
            "(it enables the arm64 architecture and bookworm-backports)"
        )
    names = sorted(
        {
            ln
            for ln in r.stdout.splitlines()
            if ln.endswith(":arm64") and not ln.startswith((" ", "<"))
        }
    )
    return names


def _candidates(names: list[str], release: str | None) -> dict[str, str]:
    """name -> candidate version, from one apt-cache call; names without one are left out."""
    cmd = [require("apt-cache"), *APT_OPTS, "policy", *names]
    if release:
        cmd[1:1] = ["-t", release]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    found: dict[str, str] = {}
    for m in re.finditer(r"^(\S+):\n(?:  .*\n)*?  Candidate: (\S+)", out, re.M):
        if m.group(2) != "(none)":
            name = m.group(1) if m.group(1).endswith(":arm64") else m.group(1) + ":arm64"
            found[name] = m.group(2)
    return found


def _resolve(pkgs: list[str], release: str | None, closure: bool) -> list[str]:
    """pkgs (and with closure, their recursive dependencies) as name:arm64=version."""
    wanted = [f"{p}:arm64" for p in pkgs]
    names = wanted
    if closure:
        names = wanted + _apt_resolve(pkgs, release)
    cands = _candidates(names, release)
    missing = [n for n in wanted if n not in cands]
    if missing:
        raise SetupError(
            f"no installable candidate for {missing}; run ci/setup (arm64 architecture, "
            "bookworm-backports, apt-get update)"
        )
    return sorted(f"{n}={cands[n]}" for n in dict.fromkeys(names) if n in cands)


def _resolve_memo(
    pkgs: list[str], release: str | None, closure: bool, cache: ArtifactCache
) -> list[str]:
    """_resolve, memoised until apt's package lists change (apt-cache costs seconds)."""
    lists = Path("/var/lib/apt/lists")
    try:
        sig = str(max(p.stat().st_mtime_ns for p in lists.iterdir()))
    except (OSError, ValueError):
        sig = "none"
    memo = (
        cache.root
        / "memo"
        / ("apt-" + Hasher("apt").add("q", f"{pkgs}{release}{closure}").hexdigest() + ".json")
    )
    try:
        data = json.loads(memo.read_text())
        if data["sig"] == sig:
            return data["versioned"]
    except (OSError, ValueError, KeyError):
        pass
    versioned = _resolve(pkgs, release, closure)
    try:
        atomic_write(memo, json.dumps({"sig": sig, "versioned": versioned}).encode())
    except OSError:
        pass
    return versioned


def fetch(
    pkgs: list[str], cache: ArtifactCache, release: str | None = None, closure: bool = False
) -> list[Path]:
    """Download arm64 .debs (optionally with their dependency closure) into the cache."""
    versioned = _resolve_memo(pkgs, release, closure, cache)
    h = Hasher("debs")
    for v in versioned:
        h.add(v, v)

    def download(tmp: Path) -> dict:
        r = subprocess.run(
            [require("apt-get"), *APT_OPTS, "download", "-q", *versioned],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise SetupError(
                f"apt-get download of arm64 packages failed: {r.stderr.strip()[-500:]}"
            )
        return {"packages": versioned}

    d = cache.get_or_build("debs", h.hexdigest(), download, {"packages": " ".join(versioned)})
    return sorted(d.glob("*.deb"))


def extract(debs: list[Path], dest: Path) -> None:
    dpkg_deb = require("dpkg-deb")
    for deb in debs:
        subprocess.run([dpkg_deb, "-x", str(deb), str(dest)], check=True)


def needed(elf: Path) -> list[str]:
    """DT_NEEDED of an ELF file (any architecture: readelf reads headers only)."""
    r = subprocess.run(["readelf", "-d", str(elf)], capture_output=True, text=True)
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)


def library_closure(binary: Path, root: Path) -> dict[str, Path]:
    """soname -> file in root for binary's full shared-library closure."""
    libdirs = [
        root / "lib/aarch64-linux-gnu",
        root / "usr/lib/aarch64-linux-gnu",
        root / "lib",
        root / "usr/lib",
    ]
    found: dict[str, Path] = {}
    todo = needed(binary)
    while todo:
        so = todo.pop()
        if so in found:
            continue
        for d in libdirs:
            p = d / so
            if p.exists():
                found[so] = p.resolve()
                todo.extend(needed(found[so]))
                break
        else:
            raise SetupError(f"{binary.name}: shared library {so} not found in the arm64 packages")
    return found


def scratch_dir(cache: ArtifactCache) -> tempfile.TemporaryDirectory:
    cache.ensure_writable()
    (cache.root / "tmp").mkdir(exist_ok=True)
    return tempfile.TemporaryDirectory(dir=cache.root / "tmp")
