"""Imported first by the ci/ Python scripts: run them in the project's venv (.venv, made by
ci/setup), wherever they were started from, so `ci/bench-build` works as the README says and
not only as `.venv/bin/python ci/bench-build`."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_PY = ROOT / ".venv" / "bin" / "python"

if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve() and VENV_PY.exists():
    os.execv(str(VENV_PY), [str(VENV_PY), sys.argv[0], *sys.argv[1:]])
sys.path.insert(0, str(ROOT))
