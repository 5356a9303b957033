"""Who is on the other end of a loopback TCP connection, for services that must answer only
their owner (a board's power relay, its fastboot port).

Why not a secret: labgrid hands a relay's URL and a fastboot address to every client of the
coordinator, and a token in them would be one more thing to leak; the kernel already knows
which user owns each socket. For TCP (no SO_PEERCRED) it says so in /proc/net/tcp{,6}: the
peer's socket is the entry whose local address is our remote one. Only an ESTABLISHED entry
with an inode counts: a client that connected, wrote and closed at once leaves a timewait
entry whose uid reads 0 (root), and must not pass for root.
"""

from __future__ import annotations

import os
import socket
import struct

ESTABLISHED = "01"


def _hex_addr(host: str, port: int) -> str:
    """host:port as /proc/net/tcp{,6} prints it (each 32-bit word in host byte order)."""
    if ":" in host:
        raw = socket.inet_pton(socket.AF_INET6, host)
        words = struct.unpack("=4I", raw)
        return "".join(f"{w:08X}" for w in words) + f":{port:04X}"
    (w,) = struct.unpack("=I", socket.inet_aton(host))
    return f"{w:08X}:{port:04X}"


def _lookup(table: str, local: str, remote: str) -> int | None:
    try:
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[1] == local and cols[2] == remote:
                    if cols[3] != ESTABLISHED or cols[9] == "0":
                        return None
                    return int(cols[7])
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return None


def tcp_peer_uid(conn: socket.socket) -> int | None:
    """The uid owning the other end of conn (a connection to a local client), or None.
    A client may reach our IPv4 port from a dual-stack IPv6 socket (gRPC's do): its entry is
    then in tcp6, with both addresses v4-mapped."""
    try:
        ours = conn.getsockname()[:2]
        theirs = conn.getpeername()[:2]
    except OSError:
        return None
    if conn.family == socket.AF_INET6:
        return _lookup("/proc/net/tcp6", _hex_addr(*theirs), _hex_addr(*ours))
    uid = _lookup("/proc/net/tcp", _hex_addr(*theirs), _hex_addr(*ours))
    if uid is None:
        mapped = [(f"::ffff:{h}", port) for h, port in (theirs, ours)]
        uid = _lookup("/proc/net/tcp6", _hex_addr(*mapped[0]), _hex_addr(*mapped[1]))
    return uid


def is_owner(conn: socket.socket) -> bool:
    """True when the peer's socket belongs to this user. Not root as such: a forwarder
    running as root (docker-proxy, socat) would pass any neighbour's connection through, and
    a setuid program's socket keeps the uid it was made with."""
    uid = tcp_peer_uid(conn)
    return uid is not None and uid == os.getuid()
