"""A loopback TCP port that answers only its owner, in front of a service on a unix socket.

Why: the local rack's services (labgrid's coordinator, ser2net's board consoles) are reached
by labgrid at HOST:PORT, and neither can tell who connects: any local user could acquire a
place or type into a board's root shell. The service itself listens on a unix socket in the
rack's private directory (0700, so nobody else can reach it), and this relay holds the TCP
port where labgrid expects it, passing a connection through byte for byte only when the
peer's socket belongs to the user running the rack (labsim.peer).

Each upstream connection is bound to its own name in the socket's directory before it
connects, so the service sees one distinct peer per client: labgrid's coordinator keys its
sessions by `context.peer()`, which is a bare `unix:` for every unnamed client socket.

    python -m labsim.ownerrelay --listen 127.0.0.1:PORT --unix SOCK -- CMD...

binds the port, then runs CMD (which must listen on SOCK) and relays until CMD exits.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from labsim.peer import is_owner

_names = itertools.count(1)


def parse_listen(addr: str) -> tuple[str, int]:
    """HOST:PORT (or [V6]:PORT) as the lab writes a coordinator address."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{addr!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def listen(addr: tuple[str, int]) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    return socket.create_server(addr, family=family)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    """src -> dst until src ends; then only dst's sending side is closed, so what is still
    coming the other way (console output after the client half-closed) is not cut off."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _connect(target: Path, wait: float = 5.0) -> tuple[socket.socket, Path] | None:
    """A unix connection to target from a socket of its own name beside it (see above)."""
    name = target.parent / f".peer-{os.getpid()}-{next(_names)}"
    end = time.monotonic() + wait  # the service may still be creating its socket
    while True:
        up = socket.socket(socket.AF_UNIX)
        try:
            name.unlink(missing_ok=True)
            up.bind(str(name))
            up.connect(str(target))
            return up, name
        except OSError:
            up.close()
            name.unlink(missing_ok=True)
            if time.monotonic() > end:
                return None
            time.sleep(0.05)


def serve(conn: socket.socket, target: Path) -> None:
    """Relay one accepted connection, if its peer is the owner; close it otherwise."""
    if not is_owner(conn):  # someone else's process on this host
        conn.close()
        return
    got = _connect(target)
    if got is None:
        conn.close()
        return
    up, name = got
    t = threading.Thread(target=_pipe, args=(up, conn), daemon=True)
    t.start()
    _pipe(conn, up)
    t.join()
    conn.close()
    up.close()
    name.unlink(missing_ok=True)


def front(lsock: socket.socket, target: Path, child: subprocess.Popen) -> None:
    """Accept on lsock while child runs; each connection relayed in its own thread."""
    lsock.settimeout(0.5)
    while child.poll() is None:
        try:
            conn, _ = lsock.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        threading.Thread(target=serve, args=(conn, target), daemon=True).start()


def run(lsock: socket.socket, target: Path, argv: list[str], who: str) -> int:
    """Start the service (argv, listening on target) and front it until it exits; SIGTERM
    and SIGINT are passed on. Returns the service's exit status."""
    target.unlink(missing_ok=True)
    try:
        child = subprocess.Popen(argv)
    except OSError as e:
        sys.exit(f"{who}: cannot start {argv[0]}: {e}")

    def stop(signum: int, frame: object) -> None:  # noqa: ARG001 - the parent's SIGTERM
        child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        front(lsock, target, child)
    finally:
        lsock.close()
        if child.poll() is None:
            child.terminate()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        target.unlink(missing_ok=True)
    return child.returncode or 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description="an owner-only loopback TCP port in front of a service on a unix socket"
    )
    ap.add_argument("--listen", required=True, help="HOST:PORT to answer on (loopback)")
    ap.add_argument("--unix", required=True, type=Path, help="the service's unix socket")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the service's command line")
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no service command after --")
    who = f"owner-only relay for {Path(cmd[0]).name}"
    try:  # the port first: nobody may hold it by the time the service is announced
        lsock = listen(parse_listen(a.listen))
    except (OSError, ValueError) as e:
        sys.exit(f"{who}: cannot listen on {a.listen}: {e}")
    sys.exit(run(lsock, a.unix, cmd, who))


if __name__ == "__main__":
    main()
