#!/usr/bin/env python3
"""Host-side checks of vfio-agent's non-UAPI parts (no VFIO needed).

Usage: python3 cli_check.py PATH/TO/vfio-agent-host

Checks argument parsing, OPS parsing (through --dry-run), exit codes, the
usage message on stderr, and that stdout is always exactly one line of 7-bit
ASCII JSON that round-trips the strings given on the command line.
Named cli_check.py (not test_*.py) so the project's pytest does not collect
it; `make -C agent test` runs it.  Ends with "N passed, N failed[, N skipped]": a check
this machine cannot make (the device node it needs absent is present) says SKIP and why.
"""

import json
import os
import subprocess
import sys

AGENT = sys.argv[1] if len(sys.argv) > 1 else "build/vfio-agent-host"
passed = 0
failed = 0
skipped = 0


class Skip(Exception):  # noqa: N818 - reads as "skip(reason)"
    """A check that cannot be made on this machine, reported with its reason (never "ok")."""


def run(*args):
    p = subprocess.run([AGENT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def parse_one_line(out):
    assert out.endswith(b"\n"), out
    assert out.count(b"\n") == 1, out
    assert all(0x20 <= b < 0x7F for b in out[:-1]), "non-ASCII/control byte in stdout"
    return json.loads(out)


def check(name, fn):
    global passed, failed, skipped
    try:
        fn()
    except Skip as e:
        skipped += 1
        print(f"SKIP {name}: {e}")
    except Exception as e:  # noqa: BLE001 - report every failure kind
        failed += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}")
    else:
        passed += 1
        print(f"ok   {name}")


def usage_case(args, needle, cmd=None):
    def fn():
        rc, out, err = run(*args)
        assert rc == 2, f"rc={rc}"
        assert needle in err, f"{needle!r} not in stderr: {err!r}"
        assert "usage:" in err, "usage text missing from stderr"
        j = parse_one_line(out)
        assert j["ok"] is False
        assert j["error"]["step"] == "usage", j
        assert j["error"]["errno"] == 22
        assert needle in j["error"]["detail"], j
        assert j["cmd"] == cmd, j
        for k in ("path", "device"):
            assert k in j

    return fn


SEL = ["--group", "3", "--device", "9030000.pl061"]

USAGE = [
    ([], "missing command", None),
    (["frob"], "unknown command 'frob'", None),
    (["info"], "missing selector", "info"),
    (["info", "--group", "3"], "missing --device", "info"),
    (["info", "--group", "x3", "--device", "d"], "bad group number", "info"),
    (["info", "--group", "-1", "--device", "d"], "bad group number", "info"),
    (["info", "--group", "0x", "--device", "d"], "bad group number", "info"),
    (["info", "--group", "4294967296", "--device", "d"], "bad group number", "info"),
    (["info", "--group", "1", "--cdev", "/dev/x", "--device", "d"], "only one of", "info"),
    (["info", "--group", "1", "--group", "2", "--device", "d"], "only one of", "info"),
    (
        ["info", "--cdev", "/dev/x", "--device", "d", "--iommu", "type1v2"],
        "--iommu applies",
        "info",
    ),
    (["info", *SEL, "--iommu", "type2"], "--iommu: expected", "info"),
    (["info", *SEL, "--region", "0"], "not valid for 'info'", "info"),
    (["info", *SEL, "--bogus", "1"], "unknown option '--bogus'", "info"),
    (["info", *SEL, "stray"], "unexpected argument 'stray'", "info"),
    (["info", *SEL, "--device"], "needs a value", "info"),
    (["info", "--group", "1", "--device", ""], "empty name", "info"),
    (["read", *SEL, "--offset", "0"], "missing --region", "read"),
    (["read", *SEL, "--region", "0"], "missing --offset", "read"),
    (["read", *SEL, "--region", "0", "--offset", "0x10,,0x14"], "empty item", "read"),
    (["read", *SEL, "--region", "0", "--offset", "0x10,"], "empty item", "read"),
    (["read", *SEL, "--region", "0", "--offset", "0xfz"], "bad number '0xfz'", "read"),
    (["read", *SEL, "--region", "0", "--offset", "0x2"], "not aligned", "read"),
    (
        ["read", *SEL, "--region", "0", "--offset", "0x2", "--width", "3"],
        "--width: expected",
        "read",
    ),
    (
        ["read", *SEL, "--region", "0", "--offset", "0", "--via", "ioctl"],
        "expected mmap or pread",
        "read",
    ),
    (
        ["read", *SEL, "--region", "0", "--offset", "0", "--index", "0"],
        "not valid for 'read'",
        "read",
    ),
    (["irq", *SEL, "--timeout-ms", "10"], "missing --index", "irq"),
    (["irq", *SEL, "--index", "0"], "missing --timeout-ms", "irq"),
    (["irq", *SEL, "--index", "0", "--hold", "--timeout-ms", "10"], "waits for a signal", "irq"),
    (["irq", *SEL, "--index", "0", "--hold", "--ack", "r:0"], "waits for a signal", "irq"),
    (["read", *SEL, "--region", "0", "--offset", "0", "--hold"], "--hold is not valid", "read"),
    (
        ["irq", *SEL, "--index", "0", "--timeout-ms", "10", "--count", "0"],
        "--count: bad number",
        "irq",
    ),
    (["irq", *SEL, "--index", "0", "--timeout-ms", "10", "--setup", ""], "empty OPS list", "irq"),
    (
        ["irq", *SEL, "--index", "0", "--timeout-ms", "10", "--setup", "w:0x44"],
        "expected w:OFF=VAL",
        "irq",
    ),
    (
        ["irq", *SEL, "--index", "0", "--timeout-ms", "10", "--setup", "x:0x44=1"],
        "unknown op kind 'x'",
        "irq",
    ),
    (
        ["irq", *SEL, "--index", "0", "--timeout-ms", "10", "--setup", "w0x44=1"],
        "bad op 'w0x44=1'",
        "irq",
    ),
    (
        ["irq", *SEL, "--index", "0", "--timeout-ms", "10", "--setup", "w:0x42=1"],
        "not 4-byte aligned",
        "irq",
    ),
    (
        ["irq", *SEL, "--index", "0", "--timeout-ms", "10", "--setup", "w:0x44=0x100000000"],
        "bad value",
        "irq",
    ),
    (["irq", *SEL, "--index", "0", "--timeout-ms", "10", "--ack", "r:0,,r:4"], "empty op", "irq"),
    (
        ["irq", *SEL, "--index", "0", "--timeout-ms", "10", "--ack", "s:0x40c&=8"],
        "bad offset",
        "irq",
    ),
    (["irq", *SEL, "--index", "0", "--timeout-ms", "10", "--ack", "d:abc"], "bad delay", "irq"),
    (
        ["irq", *SEL, "--index", "0", "--timeout-ms", "10", "--ops-via", "x"],
        "expected mmap or pread",
        "irq",
    ),
]

for i, (args, needle, cmd) in enumerate(USAGE):
    check(f"usage[{i}] {' '.join(args)[:60]}", usage_case(args, needle, cmd))


def help_ok():
    rc, out, err = run("--help")
    assert rc == 0 and b"usage:" in out and err == ""


def version_ok():
    rc, out, _ = run("--version")
    assert rc == 0 and out.startswith(b"vfio-agent "), out


def dry_run_irq():
    rc, out, _ = run(
        "irq",
        "--group=0x10",
        "--device",
        "9040000.pl011",
        "--index",
        "0",
        "--timeout-ms",
        "0x3e8",
        "--count",
        "3",
        "--setup",
        "w:0x44=0x7ff,w:0x38=0x50",
        "--setup",
        "s:0x40C|=8",
        "--ack",
        "r:0x0,w:0x44=0x50,c:0x410&=~0x8,s:0x10=1,c:0x10=2,d:010",
        "--ready-file",
        "/tmp/r",
        "--dry-run",
    )
    assert rc == 0, rc
    j = parse_one_line(out)
    assert j["ok"] is True and j["cmd"] == "irq" and j["path"] == "group"
    a = j["args"]
    assert a["group"] == 16 and a["iommu"] == "type1v2" and a["timeout_ms"] == 1000
    assert a["count"] == 3 and a["index"] == 0 and a["ready_file"] == "/tmp/r"
    assert a["setup"] == [
        {"op": "w", "offset": 0x44, "value": "0x000007ff"},
        {"op": "w", "offset": 0x38, "value": "0x00000050"},
        {"op": "s", "offset": 0x40C, "mask": "0x00000008"},
    ], a["setup"]
    assert a["ack"] == [
        {"op": "r", "offset": 0},
        {"op": "w", "offset": 0x44, "value": "0x00000050"},
        {"op": "c", "offset": 0x410, "mask": "0x00000008"},
        {"op": "s", "offset": 0x10, "mask": "0x00000001"},
        {"op": "c", "offset": 0x10, "mask": "0x00000002"},
        {"op": "d", "ms": 10},  # leading 0 is decimal, not octal
    ], a["ack"]


def dry_run_read():
    rc, out, _ = run(
        "read",
        "--noiommu-group",
        "0",
        "--device",
        "d",
        "--region",
        "0",
        "--offset",
        "0xfe0,0xfe4,4072,0XFEC",
        "--via",
        "pread",
    )
    # not a dry run: fails at open on the host, exit 1, step "open"
    assert rc == 1, rc
    j = parse_one_line(out)
    assert j["ok"] is False and j["path"] == "noiommu"
    assert j["error"]["step"] == "open" and j["error"]["errno"] == 2
    assert j["error"]["detail"] == "/dev/vfio/noiommu-0"
    assert j["group"]["iommu"] == "noiommu"
    rc, out, _ = run(
        "read",
        "--noiommu-group",
        "0",
        "--device",
        "d",
        "--region",
        "0",
        "--offset",
        "0xfe0,0xfe4,4072,0XFEC",
        "--width",
        "4",
        "--dry-run",
    )
    j = parse_one_line(out)
    assert j["args"]["offsets"] == [0xFE0, 0xFE4, 4072, 0xFEC]
    assert j["args"]["via"] == "mmap" and j["args"]["width"] == 4


def dry_run_cdev():
    rc, out, _ = run("info", "--cdev", "/dev/vfio/devices/vfio1", "--device", "d", "--dry-run")
    j = parse_one_line(out)
    assert rc == 0 and j["path"] == "cdev" and j["args"]["cdev"] == "/dev/vfio/devices/vfio1"
    assert j["args"]["iommu"] is None


def runtime_fail_group():
    if os.path.exists("/dev/vfio/4242"):
        raise Skip("/dev/vfio/4242 exists on this machine: the missing-group case cannot be made")
    rc, out, err = run("info", "--group", "4242", "--device", "9030000.pl061")
    assert rc == 1, rc
    j = parse_one_line(out)
    assert j["ok"] is False and j["cmd"] == "info" and j["device"] == "9030000.pl061"
    assert j["error"] == {
        "step": "open",
        "errno": 2,
        "msg": "No such file or directory",
        "detail": "/dev/vfio/4242",
    }, j["error"]
    assert "vfio-agent: error: open" in err


def runtime_fail_cdev():
    if os.path.exists("/dev/iommu"):
        raise Skip("/dev/iommu exists on this machine: the missing-iommufd case cannot be made")
    rc, out, _ = run(
        "irq",
        "--cdev",
        "/dev/vfio/devices/vfio9",
        "--device",
        "x",
        "--index",
        "0",
        "--timeout-ms",
        "1",
    )
    j = parse_one_line(out)
    assert rc == 1 and j["error"]["step"] == "open" and j["error"]["detail"] == "/dev/iommu"
    assert j["cdev"]["dev"] == "/dev/vfio/devices/vfio9"


def json_escaping():
    weird = [
        'quote"back\\slash',
        "tab\tnl\nret\r",
        "ctl\x01\x1f\x7f",
        "caf\u00e9 \u20ac \U0001f600",
        "end",
    ]
    for name in weird:
        rc, out, _ = run("info", "--group", "1", "--device", name, "--dry-run")
        assert rc == 0, rc
        j = parse_one_line(out)
        assert j["device"] == name, (j["device"], name)
    # invalid UTF-8 is passed as Latin-1 code points, still valid JSON
    p = subprocess.run(
        [AGENT.encode(), b"info", b"--group", b"1", b"--device", b"bad\xff\xc3(", b"--dry-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    j = parse_one_line(p.stdout)
    assert j["device"] == "bad\u00ff\u00c3(", j["device"]


check("--help", help_ok)
check("--version", version_ok)
check("dry-run irq OPS parsing", dry_run_irq)
check("read offsets + runtime failure JSON", dry_run_read)
check("dry-run cdev", dry_run_cdev)
check("runtime failure: no group", runtime_fail_group)
check("runtime failure: no /dev/iommu", runtime_fail_cdev)
check("JSON escaping round-trip", json_escaping)

print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
sys.exit(1 if failed else 0)
