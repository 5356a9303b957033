"""The gating verdict: run the suites on a baseline and a candidate kernel, retry only what
the lab broke, and say PASS (0), REGRESSION (1) or INFRASTRUCTURE (2).

Why retries only for infrastructure: a flaky board must not block a kernel change, and a
real regression must never be retried until it happens to pass. Classification is shared
with the Allure categories (classify.py), so the dashboard and the verdict agree.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .classify import classify

PASS, REGRESSION, INFRASTRUCTURE = 0, 1, 2
PRODUCT_CLASSES = {"regression", "kernel-crash", "test-error"}


@dataclass
class Result:
    nodeid: str
    outcome: str  # passed | failed | error | skipped
    message: str = ""

    @property
    def cls(self) -> str:
        return classify(self.outcome, self.message)


def read_junit(path: Path) -> dict[str, Result]:
    """nodeid -> Result from a pytest --junitxml file (a test's setup error and its failure
    are merged: the worst wins)."""
    out: dict[str, Result] = {}
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        parts = classname.split(".")
        nodeid = (
            "/".join(parts[:-1]) + f"/{parts[-1]}.py::{name}"
            if len(parts) > 1
            else f"{classname}::{name}"
        )
        outcome, msg = "passed", ""
        for tag, oc in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            el = case.find(tag)
            if el is not None:
                # classify on the exception's own message: the text also holds the traceback's
                # source lines and the console, whose words ("kernel crash:", a panic of an
                # earlier test) say nothing about this failure
                outcome, msg = oc, (el.get("message") or el.text or "").strip()
                break
        prev = out.get(nodeid)
        if prev is None or prev.outcome in ("passed", "skipped"):
            out[nodeid] = Result(nodeid, outcome, msg)
    return out


def infrastructure_failures(results: dict[str, Result]) -> list[str]:
    return sorted(n for n, r in results.items() if r.cls == "infrastructure")


# A skip that says the lab, not the kernel, kept the test from running (--lab-health's
# OFFLINE line, a board that could not be reached).
LAB_SKIP = re.compile(r"OFFLINE|board .*(did not reach a shell|hung|died)|lab lock|place ")


@dataclass
class Verdict:
    code: int
    regressions: list[str] = field(default_factory=list)
    infrastructure: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    still_failing: list[str] = field(default_factory=list)
    compared: int = 0
    # nodeid -> why, for verdicts that did not come from a failure message of their own
    # (a test skipped or missing on the candidate)
    why: dict[str, str] = field(default_factory=dict)
    # the comparison itself is unsound (nothing compared, fewer tests ran than on the
    # baseline): never PASS
    errors: list[str] = field(default_factory=list)

    @property
    def word(self) -> str:
        return {PASS: "PASS", REGRESSION: "REGRESSION", INFRASTRUCTURE: "INFRASTRUCTURE"}[self.code]

    def summary(
        self, baseline: str, candidate: str, base: dict[str, Result], cand: dict[str, Result]
    ) -> str:
        lines = [
            f"gate: {self.word} — baseline {baseline}, candidate {candidate}, {self.compared} tests compared"
        ]
        for e in self.errors:
            lines.append(f"  ERROR       {e}")
        for n in self.regressions:
            first = self.why.get(n) or (cand[n].message.strip().splitlines() or [""])[0][:160]
            lines.append(f"  REGRESSION  {n} ({cand[n].cls}): {first}")
        for n in self.infrastructure:
            r = cand.get(n) if n in cand and cand[n].cls == "infrastructure" else base.get(n)
            first = self.why.get(n) or (
                (r.message.strip().splitlines() or [""])[0][:160] if r else ""
            )
            lines.append(f"  LAB         {n}: {first}")
        if self.fixed:
            lines.append(f"  fixed by the candidate: {len(self.fixed)}")
        if self.still_failing:
            lines.append(f"  failing on both (not this change's doing): {len(self.still_failing)}")
        return "\n".join(lines)


def decide(base: dict[str, Result], cand: dict[str, Result]) -> Verdict:
    """Compare per test. A test the baseline passed must run and pass on the candidate:
    skipped or missing there, it is never left out of the verdict."""
    v = Verdict(PASS)
    for n in sorted(set(base) | set(cand)):
        b, c = base.get(n), cand.get(n)
        if (b and b.cls == "infrastructure") or (c and c.cls == "infrastructure"):
            v.infrastructure.append(n)
            continue
        if b is None or b.outcome == "skipped":
            continue  # the baseline did not check it: nothing to compare against
        if c is None:
            if b.outcome == "passed":
                v.infrastructure.append(n)
                v.why[n] = (
                    "passed on the baseline, not run on the candidate (missing from its results)"
                )
            continue
        if c.outcome == "skipped":
            if b.outcome != "passed":
                continue
            reason = (c.message.strip().splitlines() or ["no reason given"])[0][:160]
            if LAB_SKIP.search(c.message):
                v.infrastructure.append(n)
                v.why[n] = f"passed on the baseline, skipped on the candidate by the lab: {reason}"
            else:
                v.regressions.append(n)
                v.why[n] = f"passed on the baseline, skipped on the candidate: {reason}"
            continue
        v.compared += 1
        if b.outcome == "passed" and c.cls in PRODUCT_CLASSES:
            v.regressions.append(n)
        elif b.cls in PRODUCT_CLASSES and c.outcome == "passed":
            v.fixed.append(n)
        elif b.cls in PRODUCT_CLASSES and c.cls in PRODUCT_CLASSES:
            v.still_failing.append(n)
    ran = {
        name: sum(r.outcome != "skipped" for r in rs.values())
        for name, rs in (("baseline", base), ("candidate", cand))
    }
    if v.compared == 0:
        v.errors.append(
            f"no test ran on both kernels (baseline ran {ran['baseline']}, candidate "
            f"{ran['candidate']}): nothing was checked"
        )
    elif ran["candidate"] < ran["baseline"]:
        v.errors.append(
            f"the candidate ran {ran['candidate']} tests, the baseline {ran['baseline']}: "
            "the comparison is incomplete"
        )
    v.code = (
        REGRESSION if v.regressions else INFRASTRUCTURE if v.infrastructure or v.errors else PASS
    )
    return v


def write_junit(
    path: Path,
    verdict: Verdict,
    base: dict[str, Result],
    cand: dict[str, Result],
    baseline: str,
    candidate: str,
) -> None:
    """One testcase per test, as Android CI (TradeFed-style consumers) reads JUnit: a
    regression is a <failure>, lab trouble an <error>, everything else passes."""
    suite = ET.Element(
        "testsuite",
        name="vfio-platform-gate",
        tests=str(len(set(base) | set(cand)) + len(verdict.errors)),
        failures=str(len(verdict.regressions)),
        errors=str(len(verdict.infrastructure) + len(verdict.errors)),
    )
    props = ET.SubElement(suite, "properties")
    for k, val in (("baseline", baseline), ("candidate", candidate), ("verdict", verdict.word)):
        ET.SubElement(props, "property", name=k, value=val)
    for n in sorted(set(base) | set(cand)):
        file, _, name = n.partition("::")
        case = ET.SubElement(
            suite, "testcase", classname=file.replace("/", ".").removesuffix(".py"), name=name
        )
        if n in verdict.regressions:
            f = ET.SubElement(
                case, "failure", message=f"regression: passes on {baseline}, fails on {candidate}"
            )
            f.text = verdict.why.get(n) or cand[n].message
        elif n in verdict.infrastructure:
            r = cand.get(n) if cand.get(n) and cand[n].cls == "infrastructure" else base.get(n)
            e = ET.SubElement(case, "error", message="lab/infrastructure failure (not the kernel)")
            e.text = verdict.why.get(n) or (r.message if r else "")
        elif (cand.get(n) or base.get(n)) and (cand.get(n) or base[n]).outcome == "skipped":
            ET.SubElement(case, "skipped")
    for msg in verdict.errors:
        case = ET.SubElement(suite, "testcase", classname="gate", name="comparison")
        ET.SubElement(case, "error", message="the comparison is unsound").text = msg
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
