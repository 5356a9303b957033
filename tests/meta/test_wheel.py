"""The plugin is complete as installed: a wheel built from this tree, installed in a fresh
virtualenv outside the clone, runs a HIL suite from the package (`--pyargs`) on a shipped lab
and on a lab of the user's own (`--lab-dir`), with nothing of the clone on its path.

Why this matters: the suites, the labs, the kernel patches and the agent's source used to be
found beside the package in a git clone; a `pip install`ed plugin had none of them.
"""

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.hil
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (
    "pytest_vfio_platform/labs/qemu.yaml",
    "pytest_vfio_platform/suites/conftest.py",
    "pytest_vfio_platform/suites/test_board.py",
    "pytest_vfio_platform/kernel/config/l1.config",
    "pytest_vfio_platform/agent/vfio-agent.c",
    "pytest_vfio_platform/agent/Makefile",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("wheel")
    # from a copy of what a wheel is made of: a build in the tree would leave build/ there
    src = d / "src"
    junk = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    for part in ("pytest_vfio_platform", "labsim"):
        shutil.copytree(ROOT / part, src / part, ignore=junk)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(d / "dist"), str(src)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wheel,) = (d / "dist").glob("pytest_vfio_platform-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in SHIPPED if n not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert any(n.startswith("pytest_vfio_platform/kernel/patches/") for n in names)
    assert not any(n.startswith("tests/") for n in names), "test support leaked into the wheel"
    subprocess.run([sys.executable, "-m", "venv", str(d / "venv")], check=True)
    r = subprocess.run(
        [str(d / "venv/bin/pip"), "install", "-q", str(wheel)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return d


def run_suite(d: Path, lab: str, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    junit = d / f"{lab}.xml"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VFIO_LAB_PATH")}
    cmd = [str(d / "venv/bin/pytest"), f"--lab={lab}", *extra, "-p", "no:cacheprovider"]
    cmd += [f"--run-dir={d / ('run-' + lab)}", f"--junitxml={junit}", "-q"]
    cmd += ["--pyargs", "pytest_vfio_platform.suites.test_board", "-k", "exit_code or asked_for"]
    r = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=1800)
    return r, junit


def from_site_packages(junit: Path) -> list[str]:
    files = {c.get("file") or c.get("classname") for c in ET.parse(junit).iter("testcase")}
    return sorted(f for f in files if f)


def test_a_hil_suite_runs_from_the_installed_wheel(installed):
    r, junit = run_suite(installed, "qemu")
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    where = subprocess.run(
        [
            str(installed / "venv/bin/python"),
            "-c",
            "import pytest_vfio_platform as p; print(p.__file__)",
        ],
        cwd=installed,
        capture_output=True,
        text=True,
    ).stdout
    assert "site-packages" in where and str(ROOT) not in where, where


def test_a_lab_of_ones_own_runs_from_a_lab_dir(installed):
    labs = installed / "my-labs"
    labs.mkdir(exist_ok=True)
    (labs / "mine.yaml").write_text(
        "name: mine\ninherit: qemu\ndescription: the QEMU board, under a lab name of my own\n"
    )
    r, _ = run_suite(installed, "mine", f"--lab-dir={labs}")
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    r, _ = run_suite(installed, "mine")
    assert r.returncode != 0 and "unknown lab" in r.stdout + r.stderr
