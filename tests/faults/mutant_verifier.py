"""Broken verifiers, for proving the console fault tallies can go down (test_fault_tallies).

Loaded into a child pytest with `-p mutant_verifier` and VFIO_MUTANT naming the mutation:
  no-md5       the answer between the markers is taken as printed, checksum ignored
  keep-kmsg    kernel lines spliced into an answer are not taken out
"""

from __future__ import annotations

import os

import pytest

from pytest_vfio_platform import shellrun


def _no_md5(text: str, nonce: int) -> shellrun.RunResult | None:
    body, sep, last = text.replace("\r\n", "\n").rstrip("\n").rpartition("\n@@vr ")
    m = shellrun.TRAILER.match("@@vr " + last) if sep else None
    if m is None:
        return None
    return shellrun.RunResult(int(m.group(2)), body[:-1] if body.endswith("\n") else body)


MUTANTS = {
    "no-md5": lambda: setattr(shellrun.CheckedShell, "_verify_one", staticmethod(_no_md5)),
    "keep-kmsg": lambda: setattr(
        shellrun.CheckedShell,
        "_verify",
        classmethod(lambda cls, text, nonce: cls._verify_one(text, nonce)),
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    name = os.environ.get("VFIO_MUTANT", "")
    if name not in MUTANTS:
        raise pytest.UsageError(f"VFIO_MUTANT={name!r}: one of {', '.join(MUTANTS)}")
    MUTANTS[name]()
