"""labgrid's command-line tools from this project's virtualenv.

Why the CLI and not labgrid's Python client: its session API is asyncio + gRPC internals
that change between releases; `labgrid-client` is the interface labgrid documents, and what a
lab engineer would type to reproduce what the plugin did.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..errors import LabError

VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    p = VENV_BIN / name
    return str(p) if p.exists() else name


def client(coordinator: str, *args: str, check: bool = True, timeout: float = 60) -> str:
    """One labgrid-client call; its own error text on failure."""
    cmd = [tool("labgrid-client"), "-x", coordinator, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise LabError(f"labgrid-client {' '.join(args)}: {(r.stderr or r.stdout).strip()}")
    return r.stdout
