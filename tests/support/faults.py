"""The fault suite's recorder: each fault test records the cases it tried and how each ended;
the run ends with a table per fault class (cases tried / survived / lost data) and a JSON copy.

Used by tests/faults (and any suite that injects faults) through the session fixture
`fault_recorder`:

    fault_recorder.record("bad-input", "lab: unknown key", survived=True, lost_data=False,
                          detail=message)

survived: the fault ended the way it should (a clear error naming the input and the fix, no
traceback; a recovered board). lost_data: something already kept was damaged or a partial
result became visible as complete (a cache entry, a log). The suite's promise is all
survived, nothing lost; the tests assert it, the table shows how much was tried.

Why a plugin module loaded from tests/conftest.py and not hooks in tests/faults/conftest.py:
under pytest-xdist the controller collects nothing, so it never imports
tests/faults/conftest.py when the run starts from the repository (`pytest -n 2`) and its
terminal-summary hook would never run. Why not the pytest11 entry point: users' runs
should not carry a fault table.

Why a JSON-lines file: xdist workers are separate processes. Every record is one line
appended with a single O_APPEND write (atomic on a local filesystem), to a file whose name
the controller picks and hands to the workers (workerinput); the controller, or the only
process, reads it once at the end. No xdist messaging, the same code path with or without
workers.

Where the summary goes: $PYTEST_VFIO_PLATFORM_FAULTS_JSON if set, else faults-summary.json
beside the --junitxml file if one is written, else faults-summary.json in the rootdir.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

FAULTS_JSON_ENV = "PYTEST_VFIO_PLATFORM_FAULTS_JSON"
SUMMARY_NAME = "faults-summary.json"
_WORKERINPUT = "vfio_platform_faults_jsonl"
_JSONL_KEY = pytest.StashKey[Path]()


@dataclass(frozen=True)
class FaultCase:
    cls: str
    case: str
    survived: bool
    lost_data: bool
    detail: str = ""
    test: str = ""  # the nodeid of the test that recorded it

    @property
    def clean(self) -> bool:
        return self.survived and not self.lost_data


class FaultRecorder:
    """Appends one JSON line per case to the run's shared records file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(
        self, cls: str, case: str, survived: bool, lost_data: bool, detail: str = ""
    ) -> None:
        """Record one case of fault class `cls` (e.g. "bad-input", "console", "killed")."""
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
        rec = FaultCase(cls, case, bool(survived), bool(lost_data), detail, test)
        line = (json.dumps(asdict(rec)) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write per record: lines from workers never interleave
        finally:
            os.close(fd)


def read_cases(path: Path) -> list[FaultCase]:
    if not path.is_file():
        return []
    return [FaultCase(**json.loads(line)) for line in path.read_text().splitlines() if line]


def summarize(cases: list[FaultCase]) -> dict:
    """Per-class counts and the cases that did not end cleanly (the JSON summary)."""
    classes: dict[str, dict[str, int]] = {}
    for c in cases:
        row = classes.setdefault(c.cls, {"tried": 0, "survived": 0, "lost_data": 0})
        row["tried"] += 1
        row["survived"] += c.survived
        row["lost_data"] += c.lost_data
    bad = [asdict(c) for c in cases if not c.clean]
    return {
        "classes": dict(sorted(classes.items())),
        "tried": len(cases),
        "survived": sum(c.survived for c in cases),
        "lost_data": sum(c.lost_data for c in cases),
        "all_survived_nothing_lost": not bad,
        "not_clean": bad,
    }


def table(summary: dict) -> list[str]:
    """The summary as a Markdown table (it is pasted into the README as is)."""
    rows = [("fault class", "cases tried", "survived", "lost data")]
    rows += [
        (cls, str(r["tried"]), str(r["survived"]), str(r["lost_data"]))
        for cls, r in summary["classes"].items()
    ]
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    out = []
    for n, r in enumerate(rows):
        out.append("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (x + 2) for x in w) + "|")
    return out


def summary_path(config: pytest.Config) -> Path:
    env = os.environ.get(FAULTS_JSON_ENV)
    if env:
        return Path(env)
    junit = getattr(config.option, "xmlpath", None)
    if junit:
        return Path(junit).resolve().parent / SUMMARY_NAME
    return config.rootpath / SUMMARY_NAME


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    # named now, created by the first record: a run without fault tests leaves nothing
    path = Path(tempfile.gettempdir()) / f"vfio-faults-{os.getpid()}-{uuid.uuid4().hex}.jsonl"
    if _is_worker(config):  # the controller's file (a controller without this plugin: own file)
        path = Path(config.workerinput.get(_WORKERINPUT, path))  # type: ignore[attr-defined]
    config.stash[_JSONL_KEY] = path


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: object) -> None:
    """xdist controller: tell each worker where to append."""
    node.workerinput[_WORKERINPUT] = str(node.config.stash[_JSONL_KEY])  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    if _is_worker(config):
        return
    cases = read_cases(config.stash[_JSONL_KEY])
    if not cases:
        return
    s = summarize(cases)
    verdict = (
        "all survived, nothing lost"
        if s["all_survived_nothing_lost"]
        else f"{s['tried'] - s['survived']} not survived, {s['lost_data']} lost data"
    )
    terminalreporter.write_sep("-", f"fault suite: {s['tried']} cases, {verdict}")
    for line in table(s):
        terminalreporter.write_line(line)
    for c in s["not_clean"][:20]:
        what = "LOST DATA" if c["lost_data"] else "NOT SURVIVED"
        terminalreporter.write_line(f"  {what} [{c['cls']}] {c['case']}: {c['detail'][:300]}")
    out = summary_path(config)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(s, indent=2) + "\n")
        terminalreporter.write_line(f"fault summary: {out}")
    except OSError as e:
        terminalreporter.write_line(f"fault summary not written to {out}: {e.strerror}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _is_worker(config):
        config.stash[_JSONL_KEY].unlink(missing_ok=True)


@pytest.fixture(scope="session")
def fault_recorder(pytestconfig: pytest.Config) -> Iterator[FaultRecorder]:
    """Session-scoped so property-based tests (hypothesis) can use it in every example."""
    yield FaultRecorder(pytestconfig.stash[_JSONL_KEY])
