"""Device trees for the QEMU boards: QEMU's own DT, edited by the lab, recompiled with dtc.

Why start from `-machine dumpdtb`: the board's addresses, interrupts and phandles are QEMU's
to decide; the lab only states differences (a PrimeCell presented as a platform device, a
DMA-signalling property added for a negative test). Edits are appended as `&{/path} {...}`
blocks to the decompiled source, which dtc merges — no fragile text surgery. The raw dumpdtb
blob is never passed on: it is decompiled and recompiled (the raw 1 MiB blob hung guests).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BuildError
from .cache import ArtifactCache, Hasher
from .tools import require

RECIPE_VERSION = "dtb-1"


@dataclass(frozen=True)
class DtEdit:
    """One node's changes. Values: str, list[str], int, list[int], or {'raw': dts-text}."""

    node: str
    set: dict = field(default_factory=dict)
    delete: tuple[str, ...] = ()
    dts: str = ""  # raw DTS placed inside the node (new child nodes, with labels)


def dts_value(v: object) -> str:
    if isinstance(v, dict) and "raw" in v:
        return str(v["raw"])
    if isinstance(v, bool):
        raise BuildError(
            "a boolean DT property is written as an empty list [] (present) or deleted"
        )
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, int):
        return f"<{v:#x}>"
    if isinstance(v, list):
        if not v:
            return ""
        if all(isinstance(x, str) for x in v):
            return ", ".join(dts_value(x) for x in v)
        if all(isinstance(x, int) for x in v):
            return "<" + " ".join(f"{x:#x}" for x in v) + ">"
    raise BuildError(f"cannot express {v!r} as a device-tree property value")


def render_edits(edits: Sequence[DtEdit]) -> str:
    out = []
    for e in edits:
        ref = "/" if e.node == "/" else f"&{{{e.node}}}"
        if e.dts:
            out.append(f"{ref} {{\n{e.dts}\n}};")
        if e.set or e.delete:
            lines = [f"\t/delete-property/ {p};" for p in e.delete]
            for k, v in e.set.items():
                val = dts_value(v)
                lines.append(f"\t{k} = {val};" if val else f"\t{k};")
            out.append(f"{ref} {{\n" + "\n".join(lines) + "\n};")
    return "\n".join(out) + "\n"


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError(f"{what} failed: {' '.join(cmd)}\n    {r.stderr.strip()[-800:]}")
    return r


def qemu_version(qemu: str) -> str:
    return subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[
        0
    ]


def board_dtb(
    machine_args: Sequence[str],
    edits: Sequence[DtEdit],
    cache: ArtifactCache | None = None,
    qemu: str = "qemu-system-aarch64",
) -> Path:
    """QEMU's DT for exactly these machine arguments, with edits applied, as a .dtb."""
    cache = cache or ArtifactCache()
    qemu_bin = require(qemu)
    dtc = require("dtc")
    overlay = render_edits(edits)
    h = Hasher("dtb").add("recipe", RECIPE_VERSION).add("qemu", qemu_version(qemu_bin))
    h.add("args", "\0".join(machine_args)).add("edits", overlay)

    def build(out: Path) -> dict:
        raw = out / "qemu.dtb"
        args = list(machine_args)
        # dumpdtb is a machine property: fold it into the first -machine/-M option.
        for i, a in enumerate(args):
            if a in ("-M", "-machine"):
                args[i + 1] += f",dumpdtb={raw}"
                break
        else:
            args += ["-machine", f"dumpdtb={raw}"]
        _run([qemu_bin, *args, "-nographic", "-nodefaults", "-display", "none"], "qemu dumpdtb")
        base = _run([dtc, "-q", "-I", "dtb", "-O", "dts", str(raw)], "dtc decompile").stdout
        src = out / "board.dts"
        src.write_text(base + "\n/* edits from the lab */\n" + overlay)
        r = subprocess.run(
            [dtc, "-q", "-I", "dts", "-O", "dtb", "-o", str(out / "board.dtb"), str(src)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:  # keep the source: the artifact directory is about to go
            kept = cache.root / "logs" / f"dtb-{h.hexdigest()[:12]}.dts"
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(src.read_text())
            msg = r.stderr.strip().replace(str(src), str(kept))
            raise BuildError(f"the lab's DT edits do not compile:\n    {msg[-800:]}", str(kept))
        raw.unlink()
        return {"machine_args": list(machine_args)}

    return cache.get_or_build("dtb", h.hexdigest(), build, h.parts) / "board.dtb"


def decompile(dtb: Path) -> str:
    return _run([require("dtc"), "-q", "-I", "dtb", "-O", "dts", str(dtb)], "dtc decompile").stdout
