"""Allure evidence and run metadata: what a person needs to judge a red test without
re-running it — the board console for the test's duration, the kernel messages it caused,
the agent's JSON, the guest console — and what the run was (kernel, patch series, config,
tool versions, lab).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib.metadata import version
from pathlib import Path

from .classify import allure_categories
from .images.kernel import CONFIG_DIR, PATCH_DIR

try:
    import allure

    HAVE_ALLURE = True
except ImportError:  # the plugin works without Allure; evidence then goes to pytest's report
    HAVE_ALLURE = False


def attach_text(name: str, text: str, kind: str = "text") -> None:
    if not HAVE_ALLURE or not text:
        return
    t = allure.attachment_type.JSON if kind == "json" else allure.attachment_type.TEXT
    allure.attach(text, name=name, attachment_type=t)


def attach_json(name: str, data: object) -> None:
    attach_text(name, json.dumps(data, indent=2, sort_keys=True), "json")


def label_test(lab: str, feature: str | None, story: str, severity: str = "critical") -> None:
    if not HAVE_ALLURE:
        return
    allure.dynamic.epic(lab)
    if feature:
        allure.dynamic.feature(feature)
    allure.dynamic.story(story)
    allure.dynamic.severity(
        getattr(allure.severity_level, severity.upper(), allure.severity_level.NORMAL)
    )


def series_hash() -> str:
    h = hashlib.sha256()
    for p in sorted(PATCH_DIR.glob("*.patch")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def config_hash(fragment: Path = CONFIG_DIR / "l1.config") -> str:
    return hashlib.sha256(fragment.read_bytes()).hexdigest()[:16]


def qemu_version() -> str:
    try:
        out = subprocess.run(
            ["qemu-system-aarch64", "--version"], capture_output=True, text=True
        ).stdout
        return out.splitlines()[0].replace("QEMU emulator version ", "")
    except (OSError, IndexError):
        return "not installed"


def environment(
    lab: str, kernel_label: str, kernel_release: str, boards: list[str]
) -> dict[str, str]:
    return {
        "lab": lab,
        "boards": ", ".join(boards) or "none booted",
        "kernel": kernel_label,
        "kernel.release": kernel_release or "not built",
        "patch.series": series_hash(),
        "patch.count": str(len(list(PATCH_DIR.glob("*.patch")))),
        "config.l1": config_hash(),
        "qemu": qemu_version(),
        "labgrid": version("labgrid"),
        "pytest-vfio-platform": version("pytest-vfio-platform"),
    }


def write_run_metadata(results: Path, env: dict[str, str]) -> None:
    """environment.properties and categories.json, which Allure reads from the results dir."""
    results.mkdir(parents=True, exist_ok=True)
    lines = [f"{k}={v}".replace("\n", " ") for k, v in env.items()]
    (results / "environment.properties").write_text("\n".join(lines) + "\n")
    (results / "categories.json").write_text(json.dumps(allure_categories(), indent=2))
