"""ci/report on real Allure results.

A tiny pytest session (one test passing with a step and an attachment, one failing, one that
passes in the first run and regresses with a kernel-crash message in the second) runs twice
with --alluredir; ci/report builds a report after each run with the same history file. The
checks read the history file and the data the single-file report embeds; the browser test
opens the second report in headless Chromium, looks at the screenshot and at the rendered DOM.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
CI_REPORT = ROOT / "ci" / "report"
PKG = ROOT / "report"

INNER_TESTS = """
import os

import allure


def test_passes():
    with allure.step("read the ID registers"):
        allure.attach("UART0 PeriphID 0x00341011", name="console",
                      attachment_type=allure.attachment_type.TEXT)


def test_fails():
    assert 0x41 == 0x42, "wrong PrimeCell ID"


def test_regresses():
    if os.environ["REPORT_RUN"] != "1":
        raise AssertionError("kernel crash: Kernel panic - not syncing\\nCPU: 0 PID: 1")
"""

# What the plugin writes beside the results (the Allure 2 formats; Java regexes that must match
# the whole message, hence (?s) and .* on both sides).
CATEGORIES = [
    {
        "name": "Kernel crash",
        "matchedStatuses": ["failed", "broken"],
        "messageRegex": "(?s).*(kernel crash:|Kernel panic).*",
    },
    {"name": "Kernel regression", "matchedStatuses": ["failed"]},
    {"name": "Test error", "matchedStatuses": ["broken"]},
]
ENVIRONMENT = "lab=qemu\nkernel=patched\n"
NAMES = {"test_passes", "test_fails", "test_regresses"}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(extra)
    return env


def _ci_report(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CI_REPORT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two pytest runs with --alluredir, a report after each, one history file."""
    base = tmp_path_factory.mktemp("report")
    (base / "test_inner.py").write_text(INNER_TESTS)
    history = base / "state" / "allure-history.jsonl"
    out = SimpleNamespace(base=base, history=history, results=[], reports=[], generated=[])
    for run in (1, 2):
        results = base / f"results-{run}"
        session = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:vfio_platform",  # the project's plugin: not under test here
                "-p",
                "no:cacheprovider",
                f"--rootdir={base}",
                f"--alluredir={results}",
                "test_inner.py",
            ],
            cwd=base,
            env=_clean_env(REPORT_RUN=str(run)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert session.returncode == 1, session.stdout + session.stderr  # some tests fail
        assert len(list(results.glob("*-result.json"))) == 3, session.stdout
        (results / "categories.json").write_text(json.dumps(CATEGORIES))
        (results / "environment.properties").write_text(ENVIRONMENT)
        report = base / f"report-{run}"
        done = _ci_report("--results", results, "--out", report, "--history", history)
        assert done.returncode == 0, done.stdout + done.stderr
        out.results.append(results)
        out.reports.append(report)
        out.generated.append(done)
    return out


def embedded(report: Path) -> dict[str, object]:
    """The files a single-file Awesome report embeds (d("path","base64") calls): JSON decoded,
    attachments as bytes."""
    html = (report / "index.html").read_text()
    found = re.findall(r'd\("([^"]+)","([A-Za-z0-9+/=]*)"\)', html)
    assert found, f"no embedded report data in {report}/index.html (has the format changed?)"
    return {
        name: json.loads(base64.b64decode(data))
        if name.endswith(".json")
        else base64.b64decode(data)
        for name, data in found
    }


def results_by_name(report: Path) -> dict[str, dict]:
    data = embedded(report)
    trs = [v for k, v in data.items() if k.startswith("data/test-results/")]
    return {tr["name"]: tr for tr in trs}


def test_report_written_and_located(runs):
    for report, done in zip(runs.reports, runs.generated, strict=True):
        index = report / "index.html"
        assert index.stat().st_size > 100_000
        assert done.stdout.strip().splitlines()[-1] == f"ci/report: report: {index}"
        assert "googletagmanager" not in index.read_text()  # analytics stripped


def test_history_accumulates(runs):
    lines = [json.loads(line) for line in runs.history.read_text().splitlines() if line.strip()]
    assert len(lines) == 2
    statuses = [{tr["name"]: tr["status"] for tr in run["testResults"].values()} for run in lines]
    assert statuses == [
        {"test_passes": "passed", "test_fails": "failed", "test_regresses": "passed"},
        {"test_passes": "passed", "test_fails": "failed", "test_regresses": "failed"},
    ]
    assert "(2 runs)" in runs.generated[1].stdout


def test_second_report_shows_history_and_regression(runs):
    first, second = (results_by_name(r) for r in runs.reports)
    assert set(first) == set(second) == NAMES
    assert all(not tr.get("history") for tr in first.values())
    assert [h["status"] for h in second["test_regresses"]["history"]] == ["passed"]
    assert second["test_regresses"]["transition"] == "regressed"
    assert [h["status"] for h in second["test_fails"]["history"]] == ["failed"]
    assert second["test_fails"].get("transition") is None
    # the trend chart has the earlier run as well as this one
    charts = embedded(runs.reports[1])["widgets/charts.json"]["general"].values()
    (dynamics,) = [c for c in charts if c["type"] == "statusDynamics"]
    assert len(dynamics["data"]) == 2


def test_attachment_categories_and_environment(runs):
    data = embedded(runs.reports[1])
    trs = results_by_name(runs.reports[1])
    step = trs["test_passes"]["steps"][0]
    assert step["name"] == "read the ID registers"
    assert [s["link"]["name"] for s in step["steps"] if s["type"] == "attachment"] == ["console"]
    # categories.json from the results dir, regexes translated from Java by report/allurerc.mjs
    assert [c["name"] for c in trs["test_regresses"]["categories"]] == ["Kernel crash"]
    assert [c["name"] for c in trs["test_fails"]["categories"]] == ["Kernel regression"]
    assert {"name": "lab", "values": ["qemu"]} in data["widgets/allure_environment.json"]


def test_generator_installed_once(runs):
    # the second ci/report found report/node_modules in place: no npm ci
    assert "installing the report generator" not in runs.generated[1].stderr
    stamp = PKG / "node_modules" / ".ci-report-lock.sha256"
    assert stamp.is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--results", "/nonexistent/allure-results"], "no Allure results directory at"),
        (["--results", "{empty}"], "holds no test results"),
        (["--bogus"], "unknown argument: --bogus"),
        (["--out"], "--out needs a value"),
        (["--results", "{results}", "--out", "{notreport}"], "does not look like a report"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    results = tmp_path / "results"
    results.mkdir()
    (results / "x-result.json").write_text("{}")
    notreport = tmp_path / "src"
    notreport.mkdir()
    (notreport / "keep.txt").write_text("not a report")
    args = [a.format(empty=empty, results=results, notreport=notreport) for a in args]
    done = _ci_report(*args, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert (notreport / "keep.txt").exists()


# --- the pin and the Node.js floor --------------------------------------------------------------


def _version(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(".") if p.isdigit()]
    return tuple((parts + [0, 0, 0])[:3])  # type: ignore[return-value]


def _satisfies(version: tuple[int, int, int], node_range: str) -> bool:
    """A small semver range check: enough for the `engines.node` fields in the lockfile."""
    for alternative in node_range.split("||"):
        comparators = re.findall(r"(>=|<=|>|<|=|\^|~)?\s*v?([\dx*]+(?:\.[\dx*]+)*)", alternative)
        ok = bool(comparators)
        for op, ver in comparators:
            fixed = [p for p in ver.split(".") if p.isdigit()]
            v = _version(".".join(fixed))
            if op in ("", "=") and len(fixed) < 3:  # 20, 20.x: that major (and minor)
                ok &= version[: len(fixed)] == v[: len(fixed)]
            elif op == "^":
                ok &= version >= v and version[0] == v[0]
            elif op == "~":
                ok &= version >= v and version[:2] == v[:2]
            else:
                ok &= {
                    ">=": version >= v,
                    ">": version > v,
                    "<=": version <= v,
                    "<": version < v,
                    "=": version == v,
                    "": version == v,
                }[op]
        if ok:
            return True
    return False


def test_semver_helper():
    assert _satisfies((20, 19, 0), ">= 20.19.0")
    assert not _satisfies((20, 18, 0), ">= 20.19.0")
    assert _satisfies((20, 19, 0), "18 || 20 || >=22")
    assert not _satisfies((21, 0, 0), "18 || 20 || >=22")
    assert _satisfies((20, 19, 0), "^12.20.0 || ^14.13.1 || >=16.0.0")
    assert _satisfies((14, 18, 0), ">=16 || 14 >=14.17")
    assert not _satisfies((14, 16, 0), ">=16 || 14 >=14.17")


def test_pinned_allure_3_and_node_floor():
    manifest = json.loads((PKG / "package.json").read_text())
    lock = json.loads((PKG / "package-lock.json").read_text())
    pin = manifest["dependencies"]["allure"]
    assert re.fullmatch(r"3\.\d+\.\d+", pin), f"allure must be pinned to an exact 3.x: {pin}"
    assert lock["packages"]["node_modules/allure"]["version"] == pin
    floor = re.search(r"^min_node=([\d.]+)$", CI_REPORT.read_text(), re.M)
    assert floor, "ci/report must set min_node"
    minimum = _version(floor[1])
    unmet = {
        name: meta["engines"]["node"]
        for name, meta in lock["packages"].items()
        if isinstance(meta.get("engines"), dict)
        and "node" in meta["engines"]
        and not _satisfies(minimum, meta["engines"]["node"])
    }
    assert not unmet, f"ci/report's min_node={floor[1]} is below what these need: {unmet}"


# --- in a browser -------------------------------------------------------------------------------


def _read_png(path: Path) -> tuple[int, int, list[bytes], int]:
    """Width, height, unfiltered rows, bytes per pixel: 8-bit RGB/RGBA, not interlaced."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    assert ihdr, "no IHDR"
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, f"unexpected PNG format {ihdr}"
    bpp = 3 if ctype == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride) if kind else ():
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, rows, bpp


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",  # let the report's scripts render before the capture
]


@pytest.mark.browser
def test_report_renders_in_chromium(runs, tmp_path):
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    url = (runs.reports[1] / "index.html").as_uri()  # the single-file report works from file://
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,900",
            url,
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # the tests are listed in the rendered tree
    listed = set(re.findall(r'data-testid="tree-leaf-title"[^>]*>([^<]+)<', dom))
    assert listed == NAMES, f"tree shows {listed}"

    w, h, rows, bpp = _read_png(shot)
    assert (w, h) == (1280, 900)
    colours: set[bytes] = set()
    red = green = 0
    for row in rows:
        for i in range(0, len(row), bpp):
            r, g, b = row[i : i + 3]
            colours.add(row[i : i + 3])
            red += r > 200 and g < 100 and b < 100
            green += g > 150 and r < 100 and b < 130
    # A page that only shows Allure's loading spinner has some 850 colours (anti-aliased text)
    # and a few dozen red/green pixels (the logo); the rendered report has its status ring and
    # badges: thousands of each.
    assert len(colours) > 1000, f"screenshot looks blank: {len(colours)} colours"
    assert red > 1000 and green > 500, f"no failed/passed colours: red={red} green={green}"
