"""ser2net for the local rack's exporter, listening on loopback only.

Why: labgrid's exporter starts ser2net with an accepter `tcp,PORT`, which binds every
interface — and a board's console here is a root shell without login, so anyone who could
reach the host would drive the board and could fake verdicts. The local rack puts this
wrapper first on the exporter's PATH: it rewrites the accepter to `tcp,127.0.0.1,PORT` and
runs the real ser2net. (A real lab's exporter is labgrid's business: firewall its ports, see
the README's security model.)
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

ACCEPTER = re.compile(r"(accepter:\s*\S*?,tcp),(\d+)\b")


def loopback(arg: str) -> str:
    return ACCEPTER.sub(r"\1,127.0.0.1,\2", arg)


def real_ser2net(own_dir: Path) -> str:
    path = os.pathsep.join(
        d for d in os.environ.get("PATH", "").split(os.pathsep) if d and Path(d) != own_dir
    )
    found = shutil.which("ser2net", path=path + os.pathsep + "/usr/sbin:/usr/bin")
    if found is None:
        sys.exit("ser2net (loopback wrapper): the real ser2net is not installed")
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
    argv = [real_ser2net(own), *(loopback(a) for a in sys.argv[1:])]
    os.execv(argv[0], argv)
