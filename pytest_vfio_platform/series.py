"""Is the kernel series ready to post? The checks a maintainer applies before reading a
line of code, so that the project's own series never goes out with them broken.

The series in this repository is signed with a placeholder identity: the project is not a
person, and the Developer's Certificate of Origin must be given by one. The build and the
suites do not care; posting does. `python -m pytest_vfio_platform.series --posting` refuses
the placeholder and says how to re-sign.

Why here and not only checkpatch: checkpatch passes a placeholder sign-off, and it does
not know upstream's subject style for this subsystem or that the design discussion must be
linked.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

PLACEHOLDER = "devel@pytest-vfio-platform.invalid"
# upstream writes `vfio/platform: Add ...` (prefix, then a capitalised imperative)
SUBJECT = re.compile(
    r"^\[PATCH(?: v\d+)?(?: \d+/\d+)?\] (?P<prefix>[a-z0-9_/,-]+(?:: [a-z0-9_-]+)*): (?P<rest>.+)$"
)
MAX_SUBJECT = 75
MAX_BODY = 75
RFC_LINK = "CAFgf54rCCWjHLsLUxrMspNHaKAa1o8n3Md2_ZNGVtj0cU_dOPg@mail.gmail.com"

RESIGN = f"""\
To post it, re-sign it as yourself (the DCO is a person's statement), e.g. in a kernel tree:
  git am {{dir}}/*.patch                       # on v6.12
  git rebase v6.12 --exec 'git commit --amend --no-edit --reset-author \\
      --trailer "Signed-off-by: $(git config user.name) <$(git config user.email)>"'
  # then drop the placeholder trailer ({PLACEHOLDER}) from each message,
  # and put yourself in the MAINTAINERS entry the series adds
  git format-patch -v2 --cover-letter --base=v6.12 v6.12
"""


@dataclass(frozen=True)
class Patch:
    path: Path
    author: str
    subject: str
    body: str  # the commit message below the subject
    diff: str

    @classmethod
    def read(cls, path: Path) -> Patch:
        text = path.read_text()
        head, _, rest = text.partition("\n\n")
        msg = HeaderParser().parsestr(head.split("\n", 1)[1] + "\n")
        subject = " ".join((msg["Subject"] or "").split())
        body, _, diff = rest.partition("\n---\n")
        return cls(path, " ".join((msg["From"] or "").split()), subject, body, diff)

    @property
    def signoffs(self) -> list[str]:
        return re.findall(r"^Signed-off-by: (.+)$", self.body, re.M)


def problems(patches: list[Patch], posting: bool = False) -> list[str]:
    """What a reviewer would bounce the series for; with `posting`, also the placeholder."""
    out = []
    if not any(RFC_LINK in p.body for p in patches):
        out.append("no patch carries a Link: tag to the RFC thread")
    for p in patches:
        name = p.path.name
        m = SUBJECT.match(p.subject)
        if not m:
            out.append(f"{name}: subject {p.subject!r} is not `[PATCH n/m] subsys: Summary`")
        elif not m.group("rest")[:1].isupper():
            out.append(f"{name}: summary after {m.group('prefix')!r} starts lower-case")
        elif len(m.group("prefix")) + 2 + len(m.group("rest")) > MAX_SUBJECT:
            out.append(f"{name}: subject longer than {MAX_SUBJECT} characters")
        long = [ln for ln in p.body.splitlines() if len(ln) > MAX_BODY and "://" not in ln]
        if long:
            out.append(f"{name}: commit message line over {MAX_BODY} columns: {long[0][:40]!r}...")
        if not p.signoffs:
            out.append(f"{name}: no Signed-off-by")
        elif p.author not in p.signoffs:
            out.append(f"{name}: From: {p.author!r} has not signed off")
        if posting and (PLACEHOLDER in p.author or any(PLACEHOLDER in s for s in p.signoffs)):
            out.append(f"{name}: signed with the placeholder identity {PLACEHOLDER}")
        if posting and PLACEHOLDER in p.diff:
            out.append(f"{name}: the diff names the placeholder identity (MAINTAINERS?)")
    return out


def main(argv: list[str] | None = None) -> int:
    from .images.kernel import PATCH_DIR

    ap = argparse.ArgumentParser(
        prog="python -m pytest_vfio_platform.series",
        description="Check the kernel series the way a maintainer would before reading it.",
    )
    ap.add_argument("dir", nargs="?", type=Path, default=PATCH_DIR, help="the series (*.patch)")
    ap.add_argument(
        "--posting",
        action="store_true",
        help="also refuse what may not be posted (the project's placeholder sign-off)",
    )
    a = ap.parse_args(argv)
    patches = [Patch.read(p) for p in sorted(a.dir.glob("*.patch"))]
    if not patches:
        print(f"no *.patch in {a.dir}", file=sys.stderr)
        return 2
    found = problems(patches, posting=a.posting)
    for f in found:
        print(f"series: {f}")
    if any(PLACEHOLDER in f for f in found):
        print(RESIGN.format(dir=a.dir))
    if not found:
        print(f"series: {len(patches)} patches, ready" + (" to post" if a.posting else ""))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
