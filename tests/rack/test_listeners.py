"""Nothing of the local rack listens beyond loopback, also while a place is held (when the
exporter has started ser2net for the board's console — a root shell without login). Seen
before: ser2net's accepters bound `*`."""

import re
import subprocess
from pathlib import Path

from pytest_vfio_platform.rack.cli import client


def pgid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def rack_listeners(groups: set[int]) -> list[tuple[str, str]]:
    """(local address, program) of every TCP listener whose process is in the rack."""
    out = subprocess.run(["ss", "-H", "-ltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        local = cols[3]
        for prog, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if pgid(int(pid)) in groups:
                found.append((local, prog))
    return found


def test_no_rack_listener_beyond_loopback_while_a_place_is_held(own_rack):
    addr, place = own_rack.coordinator, own_rack.board_names()[0]
    groups = set(own_rack._pids().values())
    client(addr, "-p", place, "acquire")
    try:
        listeners = rack_listeners(groups)
    finally:
        client(addr, "-p", place, "release")
    progs = {p for _, p in listeners}
    assert "ser2net" in progs, f"no ser2net listening for the held place: {listeners}"
    open_to_all = [
        (a, p)
        for a, p in listeners
        if not a.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:"))
    ]
    assert not open_to_all, f"rack processes listening beyond loopback: {open_to_all}"
