"""The guest lifecycle suite's leak measure: memory a killed VMM gives back late is waited
for, memory really gone is not forgiven, and a failure names the meminfo fields that moved.
A scripted board stands in for the readings (the suite itself runs on the real one)."""

from __future__ import annotations

from pytest_vfio_platform.suites.test_guest_lifecycle import board_resources, meminfo_moves


class ScriptedBoard:
    """Answers each reading with the next MemFree (kB) of a script; the last one repeats."""

    def __init__(self, free_kb: list[int], shmem_kb: int = 0) -> None:
        self.free = list(free_kb)
        self.shmem = shmem_kb
        self.readings = 0

    def check(self, cmd: str) -> str:
        if "drop_caches" in cmd and "meminfo" not in cmd:
            return ""
        free = self.free[min(self.readings, len(self.free) - 1)]
        self.readings += 1
        return "\n".join(
            ["40", "1", "3", "100", "4"]  # files, groups, /dev/vfio, per-CPU pages, page kB
            + [
                "MemTotal:       1000000 kB",
                f"MemFree:        {free} kB",
                f"Shmem:          {self.shmem} kB",
                "SUnreclaim:       13000 kB",
            ]
        )


def test_memory_given_back_late_is_waited_for():
    b = ScriptedBoard([900_000, 904_000, 907_000, 907_100, 907_000])
    r = board_resources(b)
    assert r["free_kb"] == 907_100 + 400
    assert b.readings == 4  # stopped once it stopped rising


def test_a_settled_board_is_read_twice():
    b = ScriptedBoard([920_000, 920_100])
    assert board_resources(b)["free_kb"] == 920_100 + 400
    assert b.readings == 2


def test_memory_really_gone_stays_gone():
    before = board_resources(ScriptedBoard([920_000]))
    after = board_resources(ScriptedBoard([912_000], shmem_kb=8192))
    lost_mb = (before["free_kb"] - after["free_kb"]) / 1024
    assert lost_mb > 7.5
    moves = meminfo_moves(before["meminfo"], after["meminfo"])
    assert moves.startswith("MemFree -8000 kB") or moves.startswith("Shmem +8192 kB"), moves
    assert "Shmem +8192 kB" in moves


def test_readings_are_bounded_on_a_board_that_keeps_freeing():
    b = ScriptedBoard([800_000 + 1000 * i for i in range(100)])
    board_resources(b)
    assert b.readings <= 21
