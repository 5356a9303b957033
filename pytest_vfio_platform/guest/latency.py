"""Stimulus -> guest latency, measured where one clock sees both ends.

Why round trips: the stimulus comes from this machine and the guest runs on another clock
(nested, under TCG), so a one-way figure would compare two clocks. Each sample here starts
and ends on this machine: the stimulus goes in, the guest's own program (a `cat` holding
the assigned device open) sends it back out through the assigned UART, the peer sees it.
So the figure is an upper bound on stimulus -> guest, and it includes the guest's reaction
and the UART's way out; it is what a user of the assigned device waits for.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..stimulus import UartPeer

TTY = "/dev/ttyAMA1"  # the assigned UART in the guest (aliased serial1)


@dataclass
class Latency:
    """Round-trip samples (seconds) of one stimulus kind; misses are stimuli that never
    came back within the per-sample bound (they are not in the figures)."""

    what: str
    samples: list[float] = field(default_factory=list)
    misses: int = 0

    def p(self, q: float) -> float:
        s = sorted(self.samples)
        return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]

    def summary(self) -> str:
        if not self.samples:
            return f"{self.what}: no sample came back ({self.misses} sent)"
        return (
            f"{self.what}: median {statistics.median(self.samples) * 1000:.1f} ms, "
            f"p95 {self.p(0.95) * 1000:.1f} ms over {len(self.samples)} samples"
            + (f", {self.misses} missed" if self.misses else "")
        )


def round_trips(
    what: str, stimulate: Callable[[int], None], peer: UartPeer, n: int, bound: float
) -> Latency:
    """n samples: stimulate(i), then time until the first byte is back at the peer. The
    line is drained between samples so a late answer is not taken for the next one."""
    lat = Latency(what)
    for i in range(n):
        time.sleep(0.2)  # the guest settles; late bytes of the previous sample arrive
        peer.take()
        t0 = time.monotonic()
        stimulate(i)
        if peer.recv_exactly(1, timeout=bound):
            lat.samples.append(time.monotonic() - t0)
        else:
            lat.misses += 1
    return lat


def forward_command(source: str, tty: str = TTY) -> str:
    """The guest side of the samples: what source yields, written out through the assigned
    UART (raw, no line discipline) as it is read — the UART itself for the echo, the
    assigned GPIO's keys' input device for the power key."""
    return f"stty -F {tty} raw -echo 115200 && (exec cat {source} > {tty} 2>/dev/null &)"


def key_event_device(guest) -> str:  # noqa: ANN001 - any guest with check()
    """The guest's input device (eventN) of the assigned GPIO block's keys."""
    dev = guest.check(
        "for e in /sys/class/input/event*; do grep -l assigned-gpio-keys $e/device/name"
        " >/dev/null && echo ${e##*/}; done"
    ).split()
    if not dev:
        raise AssertionError("no input device for the assigned GPIO block's keys in the guest")
    return dev[0]
