"""Host-side VFIO assignment on a board: bind through driver_override, find the group or
cdev, restore the previous state, and run the on-target agent.

Why one shell script per operation: each console round trip costs tens of milliseconds under
TCG and is one more chance for a garbled line; a bind is one command that reports key=value
lines, including the kernel messages it caused, so a refusal carries the kernel's reason.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .shellrun import RunResult


class Shell(Protocol):
    """What assignment needs of a machine: a verified command runner. A booted Board is one,
    and so is a guest (QemuGuest), so the same calls assign inside a guest."""

    def run(self, cmd: str, timeout: float = 30.0) -> RunResult: ...

    def check(self, cmd: str, timeout: float = 30.0) -> str: ...


# Who wants every agent result as evidence (the plugin registers the Allure attachment);
# vfio itself knows nothing of reports.
AgentObserver = Callable[[str, dict], None]
agent_observers: list[AgentObserver] = []

_BIND = r"""
d=/sys/bus/{bus}/devices/{dev}
if [ ! -e "$d" ]; then echo "missing=1"; exit 0; fi
[ -d /sys/bus/{bus}/drivers/{drv} ] && echo "known=1"
n=$(dmesg | wc -l)
l=$(readlink $d/driver); prev=${{l##*/}}
[ -n "$prev" ] && echo {dev} > $d/driver/unbind
echo "taint=$(cat /proc/sys/kernel/tainted)"
dmesg | tail -n +$((n+1)) | sed 's/^/unbind_dmesg=/'
n=$(dmesg | wc -l)
echo {drv} > $d/driver_override
echo {dev} > /sys/bus/{bus}/drivers_probe
l=$(readlink $d/driver); echo "prev=$prev"; echo "now=${{l##*/}}"
g=$(readlink $d/iommu_group); echo "group=${{g##*/}}"
for c in $d/vfio-dev/vfio*; do [ -e "$c" ] && echo "cdev=${{c##*/}}"; done
echo "nodes=$(ls /dev/vfio 2>/dev/null | tr '\n' ' ')"
dmesg | tail -n +$((n+1)) | sed 's/^/dmesg=/'
"""

_RESTORE = r"""
d=/sys/bus/{bus}/devices/{dev}
l=$(readlink $d/driver); [ -n "$l" ] && echo {dev} > $d/driver/unbind
echo > $d/driver_override
[ -n "{prev}" ] && echo {dev} > /sys/bus/{bus}/drivers_probe
l=$(readlink $d/driver); echo "now=${{l##*/}}"
"""


@dataclass
class Binding:
    """The outcome of asking the kernel to give a device to its VFIO driver."""

    device: str
    bus: str
    driver: str  # the VFIO driver asked for
    previous: str  # driver bound before ('' if none)
    now: str  # driver bound after ('' if the probe failed)
    group: str  # IOMMU group number ('' if none)
    cdev: str  # vfioN under /dev/vfio/devices ('' if none)
    nodes: list[str] = field(default_factory=list)  # /dev/vfio entries after the bind
    dmesg: list[str] = field(default_factory=list)  # kernel messages the bind caused
    unbind_dmesg: list[str] = field(default_factory=list)  # those of the previous driver's unbind
    known: bool = True  # the kernel has the driver at all (a stock kernel has no nodma one)
    # the kernel's taint once the previous driver let go, before the VFIO driver saw the
    # device: what the bind itself must leave unchanged (a host driver's own unbind may
    # warn; seen: gpio-pl061 under ACPI frees its _AEI interrupt twice)
    taint_before: int | None = None

    @property
    def bound(self) -> bool:
        return self.now == self.driver

    @property
    def group_node(self) -> str:
        return f"/dev/vfio/{self.group}" if self.group else ""

    def probe_error(self) -> int | None:
        for line in self.dmesg:
            m = re.search(r"probe with driver \S+ failed with error (-?\d+)", line)
            if m:
                return int(m.group(1))
        return None

    def refusal(self) -> str | None:
        """The reason the driver gave for refusing the device (its `refused:` line)."""
        for line in self.dmesg:
            m = re.search(
                rf"{re.escape(self.driver)} {re.escape(self.device)}: refused: (.*)", line
            )
            if m:
                return m.group(1).strip()
        return None

    def describe_failure(self) -> str:
        err = self.probe_error()
        msgs = "\n      ".join(self.dmesg) or "(no kernel message)"
        hint = ""
        if not self.known:
            hint = (
                f" — the kernel has no {self.driver} driver on the {self.bus} bus: the "
                "emulated-IOMMU change is absent (stock kernel, or its config is off)"
            )
        elif err == -22:
            hint = (
                " — the kernel refused a device without an IOMMU group (-EINVAL): the "
                "emulated-IOMMU change is absent (stock kernel)"
            )
        elif self.refusal():
            hint = f" — {self.driver} refused it: {self.refusal()}"
        return f"{self.driver} did not bind {self.device} (probe error {err}){hint}\n    dmesg:\n      {msgs}"


def require_bound(b: Binding) -> None:
    """Fail the test with the kernel's own reason when the VFIO driver did not bind."""
    if not b.bound:
        import pytest

        pytest.fail(b.describe_failure(), pytrace=False)


def bind(board: Shell, dev: str, bus: str, drv: str) -> Binding:
    """Give `dev` to driver `drv` through driver_override (the lab variant names it)."""
    out = board.check(_BIND.format(bus=bus, dev=dev, drv=drv))
    kv: dict[str, list[str]] = {}
    for line in out.splitlines():
        k, _, v = line.partition("=")
        kv.setdefault(k.strip(), []).append(v)
    if "missing" in kv:
        raise AssertionError(
            f"the board has no device /sys/bus/{bus}/devices/{dev} (check the lab inventory)"
        )
    one = lambda k: (kv.get(k) or [""])[0].strip()  # noqa: E731
    return Binding(
        device=dev,
        bus=bus,
        driver=drv,
        previous=one("prev"),
        now=one("now"),
        group=one("group"),
        cdev=one("cdev"),
        nodes=one("nodes").split(),
        dmesg=kv.get("dmesg", []),
        unbind_dmesg=kv.get("unbind_dmesg", []),
        known="known" in kv,
        taint_before=int(one("taint")) if one("taint").isdigit() else None,
    )


def restore(board: Shell, b: Binding) -> str:
    """Undo bind(): unbind, clear the override, re-probe the previous driver. Returns the
    driver bound afterwards (which must equal b.previous)."""
    out = board.check(_RESTORE.format(bus=b.bus, dev=b.device, prev=b.previous))
    return out.strip().removeprefix("now=")


class AgentError(AssertionError):
    pass


def parse_agent(out: str) -> dict:
    """The agent's one JSON line, from console output that may carry other lines."""
    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise AgentError(f"vfio-agent printed no JSON; output was:\n{out[-1500:]}")


def agent(board: Shell, *args: str, timeout: float = 30.0) -> dict:
    r = board.run("vfio-agent " + " ".join(shlex.quote(a) for a in args), timeout=timeout)
    res = parse_agent(r.out)
    res["_rc"] = r.rc
    for observe in agent_observers:
        observe(f"vfio-agent {args[0] if args else ''} {res.get('device', '')}", res)
    return res


def selector(b: Binding, path: str = "group") -> list[str]:
    if path == "cdev":
        return ["--cdev", f"/dev/vfio/devices/{b.cdev}", "--device", b.device]
    if path == "noiommu":
        return ["--noiommu-group", b.group, "--device", b.device]
    return ["--group", b.group, "--device", b.device]
