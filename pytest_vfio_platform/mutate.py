"""Mutation testing of the kernel series: is every safety condition pinned by a test?

Each mutant removes or inverts one condition the series relies on to keep DMA-capable or
unknown devices away from userspace, or to reset a device its user left behind. A mutant is
the shipped series plus one extra patch on top, so it builds incrementally from the warm
workspace (one .c recompiled). The host, refusal and reset suites then run on a board booted
with it; the mutant is killed when a test fails. One that survives is a branch no test pins:
the suite would stay green if a later change broke it.

  python -m pytest_vfio_platform.mutate [--lab qemu] [--only NAME ...] [--list]

It first runs the same suites on the shipped series, which must be green (exit 2 otherwise:
a red lab kills every mutant and proves nothing). A kill is a test that FAILED in its call
phase (from pytest's junitxml); a setup error or a timeout is an error, never a kill. It
ends with `mutants: N, killed: K` and exits 0 only when K = N. A mutant only another lab
can see runs there (the ACPI rule on `qemu-acpi`, whose shipped-series baseline runs too).
One no lab can reach would be listed as unreachable with the reason and not counted in N:
a gap in the lab, said on every run, not a kill.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from .errors import BuildError
from .images.cache import ArtifactCache
from .images.kernel import PATCH_DIR, KernelSpec, apply_patches, build_kernel, patch_sections
from .images.progress import quiet
from .images.source import default_source, pristine_tree, source_digest

NODMA = "drivers/vfio/platform/vfio_platform_nodma.c"
COMMON = "drivers/vfio/platform/vfio_platform_common.c"
SUITES = ("test_refusal.py", "test_reset.py", "test_host_assign.py")  # cheapest kill first
DMA_PROPS = (
    "iommus",
    "iommu-map",
    "msi-parent",
    "msi-map",
    "dmas",
    "memory-region",
    "#dma-cells",
    "dma-coherent",
    "dma-noncoherent",
    "dma-ranges",
)


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str  # the condition it breaks, as the table says it
    file: str
    edits: tuple[tuple[str, str], ...]  # (text that must occur once, its replacement)
    unreachable: str = ""  # why no lab can run it, if none can
    regex: bool = False  # edits are regular expressions
    lab: str = ""  # the lab that can see it, when not the one of --lab
    suites: tuple[str, ...] = SUITES  # what runs on it, cheapest kill first

    def apply(self, text: str) -> str:
        for old, new in self.edits:
            pattern = old if self.regex else re.escape(old)
            text, n = re.subn(pattern, lambda _m, new=new: new, text)
            if n != 1:
                raise ValueError(
                    f"mutant {self.name}: {self.file} has {n} copies of {old!r} (want 1): "
                    "the series changed, update the mutant"
                )
        return text


def _drop_prop(prop: str) -> Mutant:
    return Mutant(
        f"dma-prop-{prop.lstrip('#')}",
        f'"{prop}" on the node no longer refuses',
        NODMA,
        ((f'"{re.escape(prop)}",[ \n]', ""),),
        regex=True,
    )


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "allowlist",
        "any compatible is taken for the first table entry",
        NODMA,
        (("\t\tif (!strcmp(compat, vfio_nodma_ids[i].compat))\n", "\t\tif (compat)\n"),),
    ),
    Mutant(
        "fallback-compatible",
        "a fallback compatible entry admits (of_device_is_compatible)",
        NODMA,
        (
            (
                "if (!strcmp(compat, vfio_nodma_ids[i].compat))",
                "if (of_device_is_compatible(np, vfio_nodma_ids[i].compat))",
            ),
        ),
    ),
    Mutant(
        "periphid",
        "the peripheral ID read from the hardware is not compared",
        NODMA,
        (
            (
                "if (cid != PRIMECELL_CID || (pid & nd->id->mask) != nd->id->periphid) {",
                "if (cid != PRIMECELL_CID) {",
            ),
        ),
    ),
    Mutant(
        "window-size",
        "a window bigger than 4 KiB admits",
        NODMA,
        (("resource_size(res) != SZ_4K)", "resource_size(res) < SZ_4K)"),),
    ),
    *(_drop_prop(p) for p in DMA_PROPS),
    Mutant(
        "opt-in-amba",
        "the AMBA driver matches the PL031 by itself (an id table entry)",
        NODMA,
        (
            (
                "vfio_nodma_amba_ids[] = {\n\t{ 0, 0 },",
                "vfio_nodma_amba_ids[] = {\n\t{ 0x00041031, 0x000fffff },\n\t{ 0, 0 },",
            ),
        ),
    ),
    Mutant(
        "opt-in-platform",
        "the platform driver matches arm,pl061 by itself (an OF match table)",
        NODMA,
        (
            (
                "static struct platform_driver vfio_nodma_platform_driver = {\n",
                "static const struct of_device_id nodma_of_ids[] = {\n"
                '\t{ .compatible = "arm,pl061" },\n\t{ }\n};\n\n'
                "static struct platform_driver vfio_nodma_platform_driver = {\n",
            ),
            (
                "\t\t.name\t= DRIVER_NAME,\n\t},\n\t.driver_managed_dma = true,\n};\n\n#ifdef",
                "\t\t.name\t= DRIVER_NAME,\n\t\t.of_match_table = nodma_of_ids,\n\t},\n"
                "\t.driver_managed_dma = true,\n};\n\n#ifdef",
            ),
        ),
    ),
    Mutant(
        "group-registration",
        "registered as an ordinary group device (needs an IOMMU group, or noiommu)",
        NODMA,
        (
            (
                "vfio_register_emulated_iommu_dev(&nd->vpdev.vdev)",
                "vfio_register_group_dev(&nd->vpdev.vdev)",
            ),
        ),
    ),
    Mutant(
        "bus-reset-ignored",
        "vfio_platform_common overwrites the driver's reset with the reset-module lookup",
        COMMON,
        (("\tif (vdev->of_reset)\n\t\treturn 0;\n\n", ""),),
    ),
    Mutant(
        "reset-skipped",
        "no reset on open or release",
        NODMA,
        (("\treturn nd->id->reset(nd);\n", "\treturn 0;\n"),),
    ),
    Mutant(
        "pl061-lines-left",
        "the PL061 reset leaves outputs driven (direction not cleared, not checked)",
        NODMA,
        (
            ("\twritel(0, base + GPIO_DIR);\n", ""),
            (
                "\tret = nodma_expect(nd, GPIO_DIR, 0xff, 0);\n\tret = ret ?: ",
                "\tret = ",
            ),
        ),
    ),
    Mutant(
        "pl011-fifo-left",
        "the PL011 reset leaves the previous owner's bytes in the RX FIFO (not checked)",
        NODMA,
        (
            ("\tfor (n = 0; n < 64 && !(readl(base + UART_FR) & UART_FR_RXFE); n++)\n", ""),
            ("\t\treadl(base + UART_DR);\n", ""),
            ("\tret = ret ?: nodma_expect(nd, UART_FR, UART_FR_RXFE, UART_FR_RXFE);\n", ""),
        ),
    ),
    Mutant(
        "pl031-match-left",
        "the PL031 reset leaves the match interrupt enabled (not checked)",
        NODMA,
        (
            ("\twritel(0, base + RTC_IMSC);\n\twritel(0, base + RTC_MR);\n", ""),
            (
                "\tret = nodma_expect(nd, RTC_IMSC, 1, 0);\n\tret = ret ?: nodma_expect(nd, RTC_MR, ~0, 0);\n\tret = ret ?: ",
                "\tret = ",
            ),
        ),
    ),
    Mutant(
        "acpi",
        "an ACPI device is admitted without device-specific evidence",
        NODMA,
        (("\tif (has_acpi_companion(dev)) {", "\tif (0 && has_acpi_companion(dev)) {"),),
        # only an ACPI board has a device with an ACPI companion; there the next check (no
        # OF node) refuses too, so what tells it apart is the reason the driver gives
        lab="qemu-acpi",
        suites=("test_refusal.py",),
    ),
)


def series_files(patches: tuple[Path, ...]) -> list[str]:
    """The files a series touches, in order, each once."""
    return list(dict.fromkeys(path for path, _ in patch_sections(patches)))


def patched_files(patches: tuple[Path, ...], pristine: Path, scratch: Path) -> dict[str, str]:
    """The series' files as they are after it applies, from a mini-tree of just those."""
    tree = scratch / "applied"
    files = series_files(patches)
    for rel in files:
        if (pristine / rel).is_file():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pristine / rel, tree / rel)
    tree.mkdir(parents=True, exist_ok=True)
    apply_patches(tree, patches, scratch / "apply.log")
    return {rel: (tree / rel).read_text() for rel in files if (tree / rel).is_file()}


def mutant_series(m: Mutant, patches: tuple[Path, ...], after: dict[str, str], out: Path) -> Path:
    """The series plus one patch on top that makes the mutation."""
    out.mkdir(parents=True, exist_ok=True)
    for p in patches:
        shutil.copyfile(p, out / p.name)
    old = after[m.file]
    new = m.apply(old)
    diff = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"a/{m.file}",
        tofile=f"b/{m.file}",
    )
    (out / f"9999-mutant-{m.name}.patch").write_text(
        f"mutant {m.name}: {m.what}\n\ndiff --git a/{m.file} b/{m.file}\n" + "".join(diff)
    )
    return out


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed | SURVIVED | does not build | unreachable | error
    by: str = ""
    seconds: float = 0.0


def junit_results(path: Path) -> tuple[list[str], list[str]]:
    """(tests that FAILED in their call phase, tests that ERRORed in setup or teardown) from
    a pytest junitxml: only the first kill a mutant; an error is a broken lab, not a kill."""
    failed: list[str] = []
    errored: list[str] = []
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return failed, errored
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None:
            failed.append(name)
        if case.find("error") is not None:
            errored.append(name)
    return failed, errored


def run_suites(
    name: str,
    series: Path | None,
    lab: str,
    logs: Path,
    root: Path,
    extra: list[str],
    suite_files: tuple[str, ...] = SUITES,
) -> tuple[int, list[str], list[str]]:
    """The suites (by default refusal, reset and host) on a board with series (None: the
    shipped one), stopping at the first failure: (pytest's exit status, failed, errored)."""
    suites = root / "pytest_vfio_platform" / "suites"
    xml = logs / f"{name}.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        f"--lab={lab}",
        *([f"--kernel-patches={series}"] if series else []),
        f"--run-dir={logs / name}",
        f"--junitxml={xml}",
        "-x",
        "-q",
        "-rfE",
        "-p",
        "no:cacheprovider",
        *[str(suites / s) for s in suite_files],
        *extra,
    ]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    (logs / f"{name}.log").write_text(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    failed, errored = junit_results(xml)
    return r.returncode, failed, errored


def run_mutant(
    m: Mutant,
    series: Path,
    lab: str,
    logs: Path,
    root: Path,
    extra: list[str],
) -> Outcome:
    t0 = time.monotonic()
    patches = tuple(sorted(series.glob("*.patch")))
    try:
        build_kernel(KernelSpec(variant="patched", patches=patches), ArtifactCache(), quiet)
    except BuildError as e:
        (logs / f"{m.name}.log").write_text(f"{e}\n")
        return Outcome(m, "does not build", str(e)[:80], time.monotonic() - t0)
    rc, failed, errored = run_suites(m.name, series, m.lab or lab, logs, root, extra, m.suites)
    took = time.monotonic() - t0
    if failed:  # a test's own assertion: the mutant is seen
        return Outcome(m, "killed", failed[0], took)
    if rc == 0:
        return Outcome(m, "SURVIVED", "", took)
    why = f"errored: {errored[0]}" if errored else f"pytest exit {rc}"
    return Outcome(m, "error", f"{why} (not a kill), see {logs / m.name}.log", took)


def baselines(chosen: list[Mutant], default_lab: str) -> list[tuple[str, tuple[str, ...]]]:
    """(lab, suites) the shipped series must pass first: every lab a chosen mutant runs on,
    with every suite any of them runs there."""
    out: dict[str, list[str]] = {}
    for m in chosen:
        if m.unreachable:
            continue
        files = out.setdefault(m.lab or default_lab, [])
        files += [f for f in m.suites if f not in files]
    return [(lab, tuple(files)) for lab, files in out.items()]


def table(outcomes: list[Outcome]) -> str:
    rows = [
        "| mutant | what it breaks | result | first failing test | s |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        by = o.by or o.mutant.unreachable
        rows.append(f"| {o.mutant.name} | {o.mutant.what} | {o.status} | {by} | {o.seconds:.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="ci/mutate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--lab", default="qemu")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--logs", type=Path, help="where per-mutant logs go (default: a temp dir)")
    ap.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the first run on the shipped series (it must be green for kills to count)",
    )
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    a = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not a.only or m.name in a.only]
    unknown = set(a.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        ap.error(f"unknown mutant(s) {', '.join(sorted(unknown))}; --list shows them")
    if a.list:
        for m in chosen:
            print(
                f"{m.name:22} {m.what}"
                + (f" [unreachable: {m.unreachable}]" if m.unreachable else "")
            )
        return 0
    if all(m.unreachable for m in chosen):  # nothing would run: not a green verdict
        print(table([Outcome(m, "unreachable") for m in chosen]))
        print("no mutant ran: nothing was judged", file=sys.stderr)
        return 1
    root = Path(__file__).resolve().parents[1]
    patches = tuple(sorted(PATCH_DIR.glob("*.patch")))
    cache = ArtifactCache()
    src = default_source()
    pristine = pristine_tree(src, source_digest(src, cache), cache)
    scratch = Path(tempfile.mkdtemp(prefix="mutate-", dir=cache.root))
    logs = a.logs or scratch / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    try:
        after = patched_files(patches, pristine, scratch)
        if not a.no_baseline:  # a lab that is red on the shipped series judges nothing
            for lab, files in baselines(chosen, a.lab):
                name = "baseline" if lab == a.lab else f"baseline-{lab}"
                rc, failed, errored = run_suites(name, None, lab, logs, root, a.pytest_args, files)
                if rc != 0:
                    bad = (failed or errored or [f"pytest exit {rc}"])[0]
                    print(
                        f"{name}: the suites are not green on the shipped series ({bad}); "
                        f"no mutant can be judged. Log: {logs / name}.log",
                        file=sys.stderr,
                    )
                    return 2
                print(f"{name}: green on the shipped series", file=sys.stderr, flush=True)
        for m in chosen:
            if m.unreachable:
                outcomes.append(Outcome(m, "unreachable"))
                continue
            series = mutant_series(m, patches, after, scratch / "series" / m.name)
            o = run_mutant(m, series, a.lab, logs, root, a.pytest_args)
            print(f"{m.name}: {o.status} {o.by} ({o.seconds:.0f}s)", file=sys.stderr, flush=True)
            outcomes.append(o)
    finally:  # the logs stay (in scratch only when --logs did not put them elsewhere)
        for d in (scratch,) if a.logs else (scratch / "series", scratch / "applied"):
            shutil.rmtree(d, ignore_errors=True)
    print(table(outcomes))
    counted = [o for o in outcomes if o.status != "unreachable"]
    killed = sum(o.status == "killed" for o in counted)
    gaps = [o.mutant.name for o in outcomes if o.status == "unreachable"]
    print(f"logs: {logs}")
    print(
        f"mutants: {len(counted)}, killed: {killed}"
        + (f" (not reachable on any lab, not counted: {', '.join(gaps)})" if gaps else "")
    )
    return 0 if killed == len(counted) else 1


if __name__ == "__main__":
    sys.exit(main())
