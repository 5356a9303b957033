"""ser2net for the local rack's exporter: loopback only, and only for the rack's owner.

Why: labgrid's exporter starts ser2net with an accepter `tcp,PORT`, which binds every
interface, and a board's console here is a root shell without login: whoever connects drives
the board and can fake verdicts. Binding loopback keeps other hosts out but not other local
users, and ser2net cannot tell who connects. So this wrapper, first on the exporter's PATH,
gives the real ser2net a unix-socket accepter in the rack's private directory (0700) and
fronts it itself: it listens on 127.0.0.1:PORT, where labgrid's clients expect it, and relays
a connection only when the peer's socket belongs to the rack's owner (labsim.ownerrelay),
byte for byte (telnet/RFC 2217 pass through unchanged). (A real lab's exporter is labgrid's business:
firewall its ports, see the README's security model.)
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from labsim import ownerrelay

ACCEPTER = re.compile(r"(accepter:\s*\S*?),tcp,(\d+)\b")


def unix_path(sock_dir: Path, port: int) -> Path:
    """Where the real ser2net listens for the console announced on TCP port."""
    return sock_dir / f"ser2net-{port}.sock"


def to_unix(arg: str, sock_dir: Path) -> tuple[str, int | None]:
    """The accepter moved to a unix socket in sock_dir; (argument, the TCP port it had)."""
    m = ACCEPTER.search(arg)
    if m is None:
        return arg, None
    port = int(m.group(2))
    return arg[: m.start()] + f"{m.group(1)},unix,{unix_path(sock_dir, port)}" + arg[
        m.end() :
    ], port


def real_ser2net(own_dir: Path) -> str:
    path = os.pathsep.join(
        d for d in os.environ.get("PATH", "").split(os.pathsep) if d and Path(d) != own_dir
    )
    found = shutil.which("ser2net", path=path + os.pathsep + "/usr/sbin:/usr/bin")
    if found is None:
        sys.exit("ser2net (owner-only wrapper): the real ser2net is not installed")
    return found


def install(bindir: Path) -> Path:
    """Write the `ser2net` wrapper into bindir (put bindir first on the exporter's PATH)."""
    bindir.mkdir(mode=0o700, exist_ok=True)
    exe = bindir / "ser2net"
    exe.write_text(f"#!{sys.executable}\nfrom labsim.ser2net import main\nmain()\n")
    exe.chmod(0o700)
    return bindir


def main() -> None:
    own = Path(sys.argv[0]).resolve().parent
    real = real_ser2net(own)
    args = sys.argv[1:]
    port = None
    out = []
    for a in args:
        a2, p = to_unix(a, own)
        port = port if p is None else p
        out.append(a2)
    if port is None:
        if args in (["-v"], ["-h"], ["--help"]):  # labgrid's version check
            os.execv(real, [real, *args])
        # e.g. ser2net < 4.2's `-C PORT:telnet:...`: it would listen on every interface
        # with no owner check, so fail closed (the exporter reports ser2net exiting)
        sys.exit(f"ser2net (owner-only wrapper): no `tcp,PORT` accepter in {args!r}; refusing")
    try:  # the port first: nobody may hold it by the time the exporter announces it
        lsock = ownerrelay.listen(("127.0.0.1", port))
    except OSError as e:
        sys.exit(f"ser2net (owner-only wrapper): cannot listen on 127.0.0.1:{port}: {e}")
    sys.exit(
        ownerrelay.run(lsock, unix_path(own, port), [real, *out], "ser2net (owner-only wrapper)")
    )
