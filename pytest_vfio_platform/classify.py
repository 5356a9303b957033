"""Sort a test failure into who must act: the lab, the kernel, or the test author.

Why one place: the Allure categories a dashboard shows and the gate's exit code must agree;
a gate that blames the kernel for a lab hiccup (or retries a real regression until it
passes) is worse than none.
"""

from __future__ import annotations

import re

# Ordered: the first class whose pattern matches wins.
CLASSES: list[tuple[str, str, str]] = [
    # (class, Allure category name, message regex)
    (
        "kernel-crash",
        "Kernel crash",
        r"kernel crash:|Kernel panic|Internal error: Oops|Unable to handle kernel",
    ),
    (
        "infrastructure",
        "Lab/infrastructure failure",
        r"BoardError|SetupError|BuildError|LabError|did not reach a shell|board hung|board died|guest hung|"
        r"no answer within|is not booted|lab lock|place .* not|Connection refused|QEMU error",
    ),
]
PRODUCT = ("regression", "Kernel regression")
TEST_ERROR = ("test-error", "Test error")


def classify(outcome: str, message: str) -> str:
    """outcome: passed | failed (an assertion) | error (anything else) | skipped."""
    if outcome in ("passed", "skipped"):
        return outcome
    for cls, _, pattern in CLASSES:
        if re.search(pattern, message or ""):
            return cls
    return PRODUCT[0] if outcome == "failed" else TEST_ERROR[0]


def allure_categories() -> list[dict]:
    """categories.json for Allure: same rules, same order."""
    cats = [
        {
            "name": name,
            "matchedStatuses": ["failed", "broken"],
            "messageRegex": f"(?s).*({pattern}).*",
        }
        for _, name, pattern in CLASSES
    ]
    cats.append({"name": PRODUCT[1], "matchedStatuses": ["failed"]})
    cats.append({"name": TEST_ERROR[1], "matchedStatuses": ["broken"]})
    return cats
