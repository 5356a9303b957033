"""Build the on-target agent (agent/vfio-agent.c) as a static arm64 binary, cached.

Why static C: the same binary runs on the busybox boards here and on Android boards in the
lab, where there is no Python and no glibc. It is compiled against the kernel source's own
UAPI headers (the cross compiler's are too old for iommufd and the VFIO cdev).
"""

from __future__ import annotations

from pathlib import Path

from .cache import ArtifactCache, Hasher
from .kernel import CROSS, KernelSpec, toolchain_id, uapi_headers
from .progress import Progress, quiet, run_logged
from .tools import require

AGENT_DIR = Path(__file__).resolve().parents[1] / "agent"
RECIPE_VERSION = "agent-1"


def build_agent(
    spec: KernelSpec | None = None, cache: ArtifactCache | None = None, progress: Progress = quiet
) -> Path:
    cache = cache or ArtifactCache()
    require(CROSS + "gcc")
    hdr = uapi_headers(spec or KernelSpec(), cache, progress)
    h = Hasher("agent").add("recipe", RECIPE_VERSION).add("toolchain", toolchain_id())
    h.add("headers", str(hdr))
    for p in sorted(AGENT_DIR.glob("*.[ch]")) + [AGENT_DIR / "Makefile"]:
        h.add(p.name, p.read_bytes())

    def build(out: Path) -> dict:
        log = cache.root / "logs" / f"agent-{h.hexdigest()[:12]}.log"
        run_logged(
            "vfio-agent build",
            ["make", "-s", "-C", str(AGENT_DIR), f"CC={CROSS}gcc", f"HDR={hdr}", f"OUT={out}"],
            log,
            progress,
        )
        return {}

    return cache.get_or_build("agent", h.hexdigest(), build, h.parts) / "vfio-agent"
