"""Board health checks, run before the suites when asked (--lab-health), as LAVA does: a
board that cannot boot or lacks KVM/VFIO is reported offline and its tests are skipped with
that reason, instead of failing one by one and reading as kernel regressions."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import VfioPlatformError
from .session import LabSession

CHECKS = [
    ("console answers", "echo health-ok", "health-ok"),
    ("KVM present", "test -c /dev/kvm && echo yes", "yes"),
    ("vfio-platform driver", "test -d /sys/bus/platform/drivers/vfio-platform && echo yes", "yes"),
    ("vfio-amba driver", "test -d /sys/bus/amba/drivers/vfio-amba && echo yes", "yes"),
    ("VFIO container", "test -c /dev/vfio/vfio && echo yes", "yes"),
]


@dataclass
class Health:
    board: str
    ok: bool
    boot_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        if self.ok:
            return (
                f"board {self.board}: healthy (boot {self.boot_seconds:.1f}s, {len(CHECKS)} checks)"
            )
        return f"board {self.board}: OFFLINE — " + "; ".join(self.problems)


def check(session: LabSession) -> Health:
    name = f"{session.lab.name}/main"
    try:
        board = session.board("default")
    except VfioPlatformError as e:
        return Health(name, False, problems=[f"does not boot: {str(e).splitlines()[0]}"])
    h = Health(name, True, board.boot_seconds)
    for what, cmd, want in CHECKS:
        try:
            out = board.run(cmd, timeout=10).out.strip()
        except VfioPlatformError as e:
            out = f"({e})"
        if out != want:
            h.ok = False
            h.problems.append(f"{what}: failed")
    return h
