"""Fault class "bad-input": everything a user can get wrong before a board boots.

Broken lab files (YAML syntax, unknown keys, wrong types, dropped keys, unknown names, missing
labgrid images), a wrong --lab, a --kernel that is not an arm64 Image, an unwritable
--cache-dir and a full disk under the cache. Every case must end in a VfioPlatformError — on
the command line a pytest error without a traceback — whose message names the input (the
file and the key or line, the option's value) and what to do, and must leave the artifact
cache as it was: no entry that looks complete and is not, no existing entry damaged.

The lab corpus is property-based: hypothesis mutates labs/qemu.yaml (hundreds of cases,
derandomized: the same code tries the same cases, see fuzz()). The command-line cases run a real
`python -m pytest` on a one-test file in a scratch directory; none of them builds anything,
the error comes first. Each case is recorded with fault_recorder (tests/support/faults.py).
"""

from __future__ import annotations

import builtins
import copy
import errno
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from pytest_vfio_platform.errors import VfioPlatformError
from pytest_vfio_platform.images.cache import ArtifactCache
from pytest_vfio_platform.images.kernel import ARM64_MAGIC
from pytest_vfio_platform.lab import BUSES, DEVICE_CLASSES, LABS_DIR, STIMULI, load
from tests.support.faults import FaultRecorder

pytestmark = pytest.mark.faults

CLS = "bad-input"
BASE_TEXT = (LABS_DIR / "qemu.yaml").read_text()
BASE = yaml.safe_load(BASE_TEXT)
TRIGGERS = ("level-high", "level-low", "edge-rising", "edge-falling")


def fuzz(n: int) -> settings:
    """Same examples every run of the same code (CI must not flake on a new draw), no example
    database in the working tree, no per-example deadline (the first load imports things).

    Hypothesis also draws constants from the project's loaded modules, so `pytest tests/faults`
    and the full `ci/test` run may try different (each fixed) sets: the bugs this corpus found
    are pinned with @example so every run tries them."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# -- the lab document as a tree of paths ------------------------------------------------------

DocPath = tuple  # a path into the document: keys (str) and list indices (int)


def walk(node: object, prefix: DocPath = ()) -> Iterator[DocPath]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from walk(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*prefix, i)
            yield from walk(v, (*prefix, i))


def loc(path: DocPath) -> str:
    """The location lab.py names in its messages: devices[1].mmio.base — a list index in
    brackets, a mapping key after a dot, also when YAML made it an integer (a register
    offset: devices[1].reset.expect.1024.mask)."""
    out = ""
    node: object = BASE
    for p in path:
        if isinstance(p, int) and isinstance(node, list):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
        try:
            node = node[p]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            node = None
    return out


def general(location: str) -> str:
    """devices[1].mmio.base -> devices[*].mmio.base; variant names -> *."""
    g = re.sub(r"\[\d+\]", "[*]", location)
    return re.sub(r"^board\.variants\.(?!default\b)[^.\[]+", "board.variants.*", g)


def get(doc: object, path: DocPath) -> object:
    for p in path:
        doc = doc[p]  # type: ignore[index]
    return doc


def put(doc: object, path: DocPath, value: object) -> None:
    get(doc, path[:-1])[path[-1]] = value  # type: ignore[index]


ALL_PATHS = list(walk(BASE))
MAPPING_KEYS = [p for p in ALL_PATHS if isinstance(p[-1], str)]

# What the lab format leaves optional (a dropped key or a null is the default). Anything
# else dropped must be reported as missing, at its own location.
OPTIONAL = [
    r"description",
    r"refused",
    r"board\.(machine_args|uart_sockets|boot_args|vfio_args|dtb|variants)",
    r"board\.variants\.\*",
    r"board\.variants\.[^.]+\.(dtb|vfio_args|guest)",
    r"board(\.variants\.[^.]+)?\.vfio_driver(\..+)?",
    r"board(\.variants\.[^.]+)?\.dtb\[\*\]\.(set|delete|dts)(\..+)?",
    r"devices\[\*\]\.(host_driver|id_registers|stimulus|variant|guest_dt|reset)",
    r"devices\[\*\]\.reset\.(clock|expect\..+)",
    r"devices\[\*\]\.guest_dt\..+",
    r"devices\[\*\]\.id_registers\.[^.]+",
    r"devices\[\*\]\.stimulus\.(setup|ack|socket|line)",
    r"refused\[\*\]\.variant",
    r"labgrid\..+",  # passed to labgrid; lab.py checks only what the plugin relies on
]
# Mappings whose keys are names the lab chooses (variants, DT properties, registers, labgrid's
# own sections): a new key there is not an unknown key.
OPEN_MAPPINGS = [
    r"labgrid(\..+)?",
    r"board\.variants",
    r".*\.set",
    r"devices\[\*\]\.guest_dt",
    r"devices\[\*\]\.id_registers",
    r"devices\[\*\]\.reset\.expect",  # register offsets: a wrong key is a wrong offset
]
# Keys that name something defined elsewhere: removing or renaming the definition is
# reported where it is referred to.
REFERRERS = [
    r"(devices|refused)\[\d+\]\.variant",
    r"devices\[\d+\]\.stimulus\.socket",
    r"labgrid\.targets\.main\.drivers\.QEMUDriver\.\w+",
]


# Mappings whose keys lab.py checks: an unknown key there must be named.
CLOSED_MAPPINGS = [
    p
    for p in [(), *ALL_PATHS]
    if isinstance(get(BASE, p), dict)
    and not any(re.fullmatch(o, general(loc(p))) for o in OPEN_MAPPINGS)
]


def optional(location: str) -> bool:
    return any(re.fullmatch(p, general(location)) for p in OPTIONAL)


def related(err: str, location: str) -> bool:
    """The error is reported at the mutated key, one of its parents or children (a key inside
    a replaced section), or a key referring to it."""
    return (
        err == location
        or location.startswith((err + ".", err + "["))
        or err.startswith((location + ".", location + "["))
        or any(re.fullmatch(p, err) for p in REFERRERS)
    )


# -- loading a mutated lab and judging the outcome ----------------------------------------------


@pytest.fixture(scope="module")
def lab_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file per module (rewritten by every example): hypothesis runs examples in turn."""
    return tmp_path_factory.mktemp("bad-labs").resolve() / "lab.yaml"


def attempt(path: Path, data: bytes) -> tuple[object | None, str | None, BaseException | None]:
    """lab.load on these bytes: (lab, None, None), (None, message, None) for the project's
    error, or (None, None, exception) for anything else (a traceback a user would see)."""
    path.write_bytes(data)
    try:
        return load(str(path)), None, None
    except VfioPlatformError as e:
        return None, str(e), None
    except Exception as e:  # noqa: BLE001 - exactly what this suite hunts
        return None, None, e


# a key path may hold a colon not followed by a space (a key `offset:0xfe0` after a byte
# deletion joined it with its value): the location ends at the first ": "
MESSAGE = re.compile(
    r"(?P<loc>top level|line \d+(, column \d+)?|(?:[^:\s]|:(?!\s))(?:[^:]|:(?!\s))*?): (?P<what>\S.*)"
)


def where(msg: str, path: Path) -> str | None:
    """The location a clean lab error names, or None if it is not a clean lab error: one line,
    starting with the file, then the key or line, then what was expected."""
    if "\n" in msg or "Traceback" in msg or not msg.startswith(f"{path}: "):
        return None
    m = MESSAGE.fullmatch(msg[len(str(path)) + 2 :])
    return m.group("loc") if m else None


def judge(
    rec: FaultRecorder,
    case: str,
    path: Path,
    data: bytes,
    check: Callable[[object | None, str | None, str | None], str | None],
    loaded_counts: bool = True,
) -> None:
    """Load, let `check(lab, message, location)` say what is wrong (None: nothing), record
    the case and fail the test with the reason. loaded_counts=False: where any input may
    be valid, one that loads is no fault case (it proves nothing survived) and is not
    recorded; only the ones refused are, by their message."""
    lab, msg, exc = attempt(path, data)
    if not loaded_counts and exc is None and msg is None:
        return
    if exc is not None:
        problem = f"{type(exc).__name__} escaped lab.load: {exc}"
    elif msg is not None and where(msg, path) is None:
        problem = f"unclear message (no file/location): {msg!r}"
    else:
        problem = check(lab, msg, where(msg, path) if msg else None)
    rec.record(CLS, case, survived=problem is None, lost_data=False, detail=problem or msg or "")
    if exc is not None:
        raise AssertionError(f"{case}: {problem}") from exc
    assert problem is None, f"{case}: {problem}"


def dump(doc: object) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode()


# -- the property-based lab corpus -------------------------------------------------------------


def _first(pattern: str) -> DocPath:
    return next(p for p in MAPPING_KEYS if re.fullmatch(pattern, general(loc(p))))


@fuzz(160)
@given(path=st.sampled_from(MAPPING_KEYS))
@example(path=_first(r"devices\[\*\]\.reset\.expect\.\d+\.mask"))  # was named expect[1024]
def test_lab_with_a_key_dropped(path, lab_file, fault_recorder):
    doc = copy.deepcopy(BASE)
    del get(doc, path[:-1])[path[-1]]
    where_ = loc(path)

    def check(lab, msg, err):
        if msg is None:
            return None if optional(where_) else f"loaded without required key {where_}"
        if not related(err, where_):
            return f"error names {err}, not {where_}: {msg}"
        if not optional(where_) and str(path[-1]) not in msg:
            return f"error does not name the missing key {path[-1]!r}: {msg}"
        return None

    judge(fault_recorder, f"lab: drop {where_}", lab_file, dump(doc), check)


def pinned(*cases: tuple[str, str]) -> Callable:
    """@example for each (location pattern, kind): the first path of labs/qemu.yaml matching
    it, so a pinned regression follows the lab file as it changes."""

    def deco(f: Callable) -> Callable:
        for pattern, new_kind in reversed(cases):
            path = next((p for p in ALL_PATHS if re.fullmatch(pattern, general(loc(p)))), None)
            assert path is not None, f"labs/qemu.yaml has nothing like {pattern}"
            f = example(path=path, new_kind=new_kind)(f)
        return f

    return deco


WRONG = {
    "integer": 7,
    "string": "x",
    "boolean": True,
    "null": None,
    "float": 1.5,
    "list": ["x"],
    "mapping": {"x": 1},
}


def kind(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    return {int: "integer", float: "float", str: "string", list: "list", dict: "mapping"}[type(v)]


def accepts(location: str, new: object, others: list | None = None) -> bool | None:
    """Whether the lab format accepts this value here (None: either is fine). others: the
    other elements, when the value is one element of a list."""
    g = general(location)
    if g.startswith("labgrid."):
        return None  # labgrid's own section: labgrid validates it
    if new is None and (optional(location) or re.fullmatch(r"board\.variants\.[^.]+", g)):
        return None  # null is "not given" (an empty variant): valid, or an error elsewhere
    if g == "devices[*].host_driver":
        return isinstance(new, str)
    if re.fullmatch(r"devices\[\*\]\.reset\.expect\.\d+", g):  # a register: its value alone
        return isinstance(new, int) and not isinstance(new, bool)  # (mask all ones) or a mapping
    if g == "board.machine_args[*]":  # `-smp, 2`: numbers are written unquoted
        return isinstance(new, (str, int, float)) and not isinstance(new, bool)
    # (the element rule first: `[^.]+` alone also matches "name[*]")
    if g == "devices[*].guest_dt.clock-names[*]":
        return isinstance(new, str)
    if re.fullmatch(r".*\.(set|guest_dt)\.[^.]+\[\*\]", g):  # one element of a list value:
        # strings (a string list) or cells, but not both in one property
        return (
            isinstance(new, (str, int))
            and not isinstance(new, bool)
            and all(type(o) is type(new) for o in others or ())
        )
    if g == "devices[*].guest_dt.clock-names":  # a list of names, nothing else
        return new == ["x"]
    if re.fullmatch(r".*\.(set|guest_dt)\.[^.]+", g):  # a DT value: string(s), cell(s), raw
        return isinstance(new, (str, int)) and not isinstance(new, bool) or new == ["x"]
    return False


@fuzz(260)
@given(path=st.sampled_from(ALL_PATHS), new_kind=st.sampled_from(sorted(WRONG)))
@pinned(
    (r"devices\[\*\]\.id_registers\.[^.]+", "integer"),  # was TypeError
    (r"devices", "null"),  # was TypeError
    (r"board", "null"),  # was AssertionError
    (r"name", "null"),  # was accepted: a lab named None
    (r"board\.variants\.default", "boolean"),  # was accepted as {}
    (r"board\.uart_sockets\[\*\]", "integer"),  # was accepted
    (r"board\.machine_args\[\*\]", "mapping"),  # was passed to QEMU as "{'x': 1}"
    (r"board\.dtb\[\*\]\.set\.compatible\[\*\]", "boolean"),  # was written as <0x1>
    (r"board\.dtb\[\*\]\.delete\[\*\]", "list"),  # was left to fail in dtc
    (r"board\.variants\.default", "null"),  # valid: an empty variant
    (r"board\.variants\.\*\.dtb\[\*\]\.set\.compatible\[\*\]", "integer"),  # mixed list
    (r"devices\[\*\]\.reset\.expect\.\d+", "integer"),  # a register's value alone: valid
)
def test_lab_with_a_value_of_the_wrong_type(path, new_kind, lab_file, fault_recorder):
    assume(kind(get(BASE, path)) != new_kind)
    doc = copy.deepcopy(BASE)
    new = copy.deepcopy(WRONG[new_kind])
    put(doc, path, new)
    where_ = loc(path)
    parent = get(BASE, path[:-1]) if path else None
    others = (
        [x for i, x in enumerate(parent) if i != path[-1]] if isinstance(parent, list) else None
    )
    ok = accepts(where_, new, others)

    def check(lab, msg, err):
        if msg is None:
            return f"accepted {new!r} at {where_}" if ok is False else None
        if ok is True:
            return f"rejected a valid {new_kind} at {where_}: {msg}"
        if not related(err, where_):
            return f"error names {err}, not {where_}: {msg}"
        return None

    judge(fault_recorder, f"lab: {where_} = {new!r}", lab_file, dump(doc), check)


def _refs() -> list[tuple[DocPath, tuple[str, ...]]]:
    """Every key whose value must name something: a choice or a thing defined elsewhere."""
    variants = tuple(BASE["board"]["variants"])
    out: list[tuple[DocPath, tuple[str, ...]]] = [(("board", "type"), ("qemu", "rack"))]
    for i, d in enumerate(BASE["devices"]):
        out += [
            (("devices", i, "class"), DEVICE_CLASSES),
            (("devices", i, "bus"), BUSES),
            (("devices", i, "irq", "trigger"), TRIGGERS),
            (("devices", i, "stimulus", "kind"), STIMULI),
            (("devices", i, "variant"), variants),
        ]
        if d["stimulus"]["kind"] == "uart-socket":
            out.append((("devices", i, "stimulus", "socket"), tuple(BASE["board"]["uart_sockets"])))
    for i in range(len(BASE["refused"])):
        out += [(("refused", i, "bus"), BUSES), (("refused", i, "variant"), variants)]
    return out


REFS = _refs()
NAMES = st.text(string.ascii_letters + string.digits + "-_.@ /", min_size=1, max_size=16)


@fuzz(120)
@given(ref=st.sampled_from(REFS), name=NAMES)
def test_lab_naming_an_unknown_device_variant_or_choice(ref, name, lab_file, fault_recorder):
    """An unknown variant, socket, bus, device class...: named, with what exists instead."""
    path, allowed = ref
    assume(name not in allowed)
    doc = copy.deepcopy(BASE)
    put(doc, path, name)
    where_ = loc(path)

    def check(lab, msg, err):
        if msg is None:
            return f"accepted unknown {name!r} at {where_}"
        if err != where_:
            return f"error names {err}, not {where_}: {msg}"
        if repr(name) not in msg or not any(a in msg for a in allowed):
            return f"message does not name {name!r} and what exists ({', '.join(allowed)}): {msg}"
        return None

    judge(fault_recorder, f"lab: {where_} = {name!r}", lab_file, dump(doc), check)


KNOWN_KEYS = {k for p in MAPPING_KEYS for k in p if isinstance(k, str)} | {
    "inherit",
    "rack",
    "host_driver",
    "variant",
    "guest",
    "vfio_args",
    "dts",
    "delete",
    "set",
    "line",
    "socket",
    "setup",
    "ack",
}
KEYS = st.one_of(
    st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=12),
    st.integers(-5, 5000),
    st.booleans(),
    st.none(),
)


@fuzz(120)
@given(
    at=st.sampled_from(CLOSED_MAPPINGS),
    key=KEYS,
    value=st.sampled_from(list(WRONG.values())),
)
def test_lab_with_an_unknown_key(at, key, value, lab_file, fault_recorder):
    where_ = loc(at)
    assume(key not in KNOWN_KEYS)
    doc = copy.deepcopy(BASE)
    get(doc, at)[key] = copy.deepcopy(value)
    shown = key if isinstance(key, str) else json.dumps(key)  # as YAML wrote it: true, null
    expect = f"{where_}.{shown}" if where_ else shown

    def check(lab, msg, err):
        if msg is None:
            return f"accepted unknown key {key!r} in {where_ or 'the top level'}"
        if err != expect or "unknown key" not in msg:
            return f"expected '{expect}: unknown key', got: {msg}"
        return None

    judge(fault_recorder, f"lab: unknown key {expect}", lab_file, dump(doc), check)


BASE_BYTES = BASE_TEXT.encode()
N_LINES = BASE_TEXT.count("\n") + 1
TOKENS = [
    b"[",
    b"]",
    b"{",
    b"}",
    b":",
    b": ",
    b"- ",
    b"\t",
    b"  ",
    b"'",
    b'"',
    b"&",
    b"*",
    b"!",
    b"!!python/object:os.system",
    b"%",
    b"@",
    b"`",
    b"|",
    b">",
    b"? ",
    b"#",
    b",",
    b"\n",
    b"\n  x",
    b"\n- y",
    b"\x00",
    b"\x07",
    b"\xff",
    b"\xc3",
    b"\xef\xbb\xbf",
    b"*undefined",
    b"<<: *x",
    b"---\n",
    b"...\n",
]


def corrupt() -> st.SearchStrategy[tuple[str, bytes]]:
    n = len(BASE_BYTES)
    pos = st.integers(0, n)
    return st.one_of(
        st.tuples(pos, st.sampled_from(TOKENS)).map(
            lambda t: (
                f"insert {t[1]!r} at byte {t[0]}",
                BASE_BYTES[: t[0]] + t[1] + BASE_BYTES[t[0] :],
            )
        ),
        st.tuples(pos, st.integers(1, 40)).map(
            lambda t: (
                f"delete bytes {t[0]}+{t[1]}",
                BASE_BYTES[: t[0]] + BASE_BYTES[t[0] + t[1] :],
            )
        ),
        pos.map(lambda p: (f"truncate at byte {p}", BASE_BYTES[:p])),
        st.tuples(pos, st.binary(min_size=1, max_size=8)).map(
            lambda t: (
                f"insert {t[1]!r} at byte {t[0]}",
                BASE_BYTES[: t[0]] + t[1] + BASE_BYTES[t[0] :],
            )
        ),
    )


@fuzz(220)
@given(mutation=corrupt())
def test_lab_with_corrupted_yaml(mutation, lab_file, fault_recorder):
    """Any byte-level damage: loads (harmless damage, e.g. in a comment) or a clean error."""
    case, data = mutation

    def check(lab, msg, err):
        if err and err.startswith("line "):
            line = int(err.split()[1].rstrip(","))
            if not 1 <= line <= data.count(b"\n") + 1:
                return f"line {line} is not in the file: {msg}"
        return None

    judge(fault_recorder, f"lab bytes: {case}", lab_file, data, check)


DUPLICABLE = [
    i
    for i, line in enumerate(BASE_TEXT.splitlines())
    if re.match(r"\s*[A-Za-z_][\w-]*:(\s|$)", line) and not line.lstrip().startswith("- ")
]


@fuzz(60)
@given(i=st.sampled_from(DUPLICABLE))
def test_lab_with_a_duplicate_key(i, lab_file, fault_recorder):
    """YAML forbids a key twice in one mapping; PyYAML would keep the last silently (a second
    `devices:` would drop the first inventory without a word)."""
    lines = BASE_TEXT.splitlines(keepends=True)
    key = lines[i].split(":")[0].strip()
    data = "".join(lines[: i + 1] + [lines[i]] + lines[i + 1 :]).encode()

    def check(lab, msg, err):
        if msg is None:
            return f"accepted duplicate key {key!r} at line {i + 2}"
        if err is None or not err.startswith(f"line {i + 2},") or repr(key) not in msg:
            return f"expected line {i + 2} and the key {key!r} named: {msg}"
        return None

    judge(fault_recorder, f"lab: duplicate key {key!r} at line {i + 2}", lab_file, data, check)


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
)
ANY = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@fuzz(150)
@given(path=st.sampled_from([(), *ALL_PATHS]), value=ANY)
@example(path=(), value={1: 0, "x": 0})  # unknown keys of two types: was TypeError (sorted)
@example(path=("devices", 0), value=[])  # was TypeError (set() of a list)
def test_lab_with_a_random_subtree(path, value, lab_file, fault_recorder):
    """Anything YAML can say, anywhere: a lab or a clean error, never another exception."""
    doc = value if path == () else copy.deepcopy(BASE)
    if path:
        put(doc, path, value)
    judge(
        fault_recorder,
        f"lab: {loc(path) or 'whole file'} = {value!r}"[:200],
        lab_file,
        dump(doc),
        lambda lab, msg, err: None,
        loaded_counts=False,
    )


CURATED = {
    # name: (file bytes, what the message must say)
    "not UTF-8": (b"name: x\nboard: \xff\n", ["line 2: not UTF-8 text (byte 0xff)"]),
    "NUL character": (b"name: x\nboard:\n  type: q\x00emu\n", ["line 3: not valid YAML"]),
    "tab indentation": (b"name: x\nboard:\n\ttype: qemu\n", ["line 3, column 1: not valid YAML"]),
    "duplicate key in a flow mapping": (
        b"name: x\nboard: {type: qemu, type: remote}\n",
        ["line 2, column 21: not valid YAML: duplicate key 'type' (first at line 2)"],
    ),
    "duplicate top-level section": (
        BASE_BYTES + b"\ndevices: []\n",
        ["not valid YAML: duplicate key 'devices' (first at line"],
    ),
    "python object tag": (b"name: !!python/object:os.system x\n", ["line 1, column 7"]),
    "undefined alias": (b"name: *nope\n", ["line 1, column 7", "undefined alias"]),
    "empty file": (b"", ["top level: expected a mapping"]),
    "only a comment": (b"# a lab\n", ["top level: expected a mapping"]),
    "board left empty": (b"name: x\nboard:\n", ["board: empty"]),
}


@pytest.mark.parametrize("name", list(CURATED))
def test_lab_curated_bad_file(name, lab_file, fault_recorder):
    """Hand-picked breakage the mutations reach only by luck (each was a traceback or a
    silent acceptance, or pins a message)."""
    data, expect = CURATED[name]

    def check(lab, msg, err):
        if msg is None:
            return "loaded"
        missing = [e for e in expect if e not in msg]
        return f"message lacks {missing}: {msg}" if missing else None

    judge(fault_recorder, f"lab: {name}", lab_file, data, check)


def test_unknown_device_name_lists_the_inventory(fault_recorder):
    lab = load("qemu")
    try:
        lab.device("uart7")
        msg = None
    except VfioPlatformError as e:
        msg = str(e)
    ok = msg is not None and "uart7" in msg and all(d.name in msg for d in lab.devices)
    fault_recorder.record(CLS, "lab.device('uart7')", ok, False, msg or "no error")
    assert ok, msg


# -- the command line: a real pytest run on a one-test file ----------------------------------

# Errors the plugin raises while configuring come before any test; the probe for them needs
# no board, so a bad input that slips through fails fast (exit 0) instead of provisioning.
PROBE = "def test_probe():\n    pass\n"
# The cache is first written when a test asks for a board (provisioning is lazy).
BOARD_PROBE = "def test_needs_a_board(board):\n    pass\n"
TRACE = re.compile(r"Traceback|INTERNALERROR|^\s+File \"|^E\s+\w+Error: \[Errno", re.M)


def run_pytest(tmp: Path, *args: str, probe: str = PROBE, timeout: float = 60) -> tuple[int, str]:
    """`python -m pytest ARGS test_probe.py` in tmp, with a fresh cache unless ARGS say
    otherwise; our own pytest's environment (xdist worker, addopts) is left out. A run that
    outlives the timeout is killed with everything it started (a build must not go on)."""
    (tmp / "test_probe.py").write_text(probe)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LG_"))}
    env["PYTEST_VFIO_PLATFORM_CACHE"] = str(tmp / "cache")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "--rootdir",
        str(tmp),
        f"--run-dir={tmp / 'run'}",
        *args,
        "test_probe.py",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return -1, f"timed out after {timeout} s (killed): {out}"
    return proc.returncode, out


def cache_state(root: Path) -> dict[str, str]:
    """Every file under root with its digest; the complete-entry invariant is checked by
    cache_problems."""
    if not root.is_dir():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def cache_problems(root: Path, before: dict[str, str]) -> list[str]:
    """Lost data: temporaries left behind, an entry directory without its manifest (looks
    like an artifact, is not one), a file of an earlier entry changed or gone. (A new entry
    with its manifest is complete by construction: not damage.)"""
    problems = []
    after = cache_state(root)
    for rel, digest in before.items():
        if after.get(rel) != digest:
            problems.append(f"existing {rel} {'changed' if rel in after else 'lost'}")
    if root.is_dir():
        for p in root.rglob("*"):
            if p.name.startswith(".") and p.name != ".":
                problems.append(f"temporary left behind: {p.relative_to(root)}")
        for entry in root.glob("artifacts/*/*"):
            if not (entry / "manifest.json").is_file():
                problems.append(f"entry without manifest: {entry.relative_to(root)}")
    return problems


def e2e(
    rec: FaultRecorder,
    case: str,
    tmp: Path,
    args: list[str],
    expect: list[str],
    exit_codes: tuple[int, ...] = (pytest.ExitCode.USAGE_ERROR,),
    cache: Path | None = None,
    probe: str = PROBE,
) -> str:
    """Run, then judge: exit code, no traceback, the message's parts present, cache intact."""
    cache = cache or tmp / "cache"
    before = cache_state(cache)
    rc, out = run_pytest(tmp, *args, probe=probe)
    problems = []
    if rc not in exit_codes:
        problems.append(f"exit code {rc}, expected {' or '.join(map(str, exit_codes))}")
    if TRACE.search(out):
        problems.append("a traceback reached the user")
    problems += [f"message lacks {s!r}" for s in expect if s not in out]
    lost = cache_problems(cache, before)
    survived = not problems
    rec.record(CLS, case, survived, bool(lost), "; ".join(problems + lost) or _error_line(out))
    assert survived and not lost, f"{case}: {problems + lost}\n--- output ---\n{out}"
    return out


def _error_line(out: str) -> str:
    for line in out.splitlines():
        if line.startswith(("ERROR: ", "E   ")) or "Failed: " in line:
            return line.strip()[:400]
    return out.strip().splitlines()[-1][:400] if out.strip() else ""


def _lab_variants() -> dict[str, tuple[str, list[str]]]:
    """Broken lab files for the command line: name -> (text, what the message must say)."""
    no_dtb_image = copy.deepcopy(BASE)
    del no_dtb_image["labgrid"]["images"]["dtb"]
    odd_variant = copy.deepcopy(BASE)
    odd_variant["devices"][1]["variant"] = "dma-nope"
    unknown_key = BASE_TEXT.replace("    class: gpio\n", "    class: gpio\n    colour: blue\n", 1)
    wrong_type = BASE_TEXT.replace("base: 0x9030000", "base: nine")
    assert BASE_TEXT not in (unknown_key, wrong_type), "labs/qemu.yaml changed: update these"
    return {
        "syntax": ("name: x\nboard: [unclosed\n", ["line 3, column 1", "not valid YAML"]),
        "unknown-key": (unknown_key, ["devices[1].colour: unknown key", "allowed:"]),
        "wrong-type": (wrong_type, ["devices[1].mmio.base: expected an integer, got 'nine'"]),
        "missing-image": (
            yaml.safe_dump(no_dtb_image, sort_keys=False),
            ["labgrid.targets.main.drivers.QEMUDriver.dtb", "'dtb'", "labgrid.images"],
        ),
        "unknown-device-variant": (
            yaml.safe_dump(odd_variant, sort_keys=False),
            ["devices[1].variant: unknown variant 'dma-nope'", "default"],
        ),
    }


LAB_CASES = ["syntax", "unknown-key", "wrong-type", "missing-image", "unknown-device-variant"]


@pytest.mark.parametrize("name", LAB_CASES)
def test_cli_broken_lab_file(name, tmp_path, fault_recorder):
    text, expect = _lab_variants()[name]
    lab = tmp_path / f"{name}.yaml"
    lab.write_text(text)
    e2e(fault_recorder, f"--lab {name}.yaml", tmp_path, [f"--lab={lab}"], [str(lab), *expect])


def test_cli_unknown_lab_lists_the_labs(tmp_path, fault_recorder):
    e2e(
        fault_recorder,
        "--lab nosuchlab",
        tmp_path,
        ["--lab=nosuchlab"],
        ["--lab nosuchlab: unknown lab; available: ", "qemu", "path to a lab YAML file"],
    )


def test_cli_lab_path_that_does_not_exist(tmp_path, fault_recorder):
    missing = tmp_path / "labs" / "mine.yaml"
    e2e(
        fault_recorder,
        "--lab missing.yaml",
        tmp_path,
        [f"--lab={missing}"],
        [f"--lab {missing}: no such file"],
    )


def _arm64_image() -> bytes:
    return b"\0" * 56 + ARM64_MAGIC + b"\0" * 200


def _bzimage() -> bytes:
    blob = bytearray(b"\xeb\x3c" + b"\0" * 1200)
    blob[0x1FE:0x200] = b"\x55\xaa"
    blob[0x202:0x206] = b"HdrS"
    return bytes(blob)


KERNELS: dict[str, tuple[Callable[[Path], None] | None, str]] = {
    # name: (how to make the file, what the message must call it)
    "vmlinux-elf": (lambda p: p.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 500), "an ELF file"),
    "text-file": (lambda p: p.write_text("this is not a kernel\n" * 10), "a text file"),
    "x86-bzimage": (lambda p: p.write_bytes(_bzimage()), "an x86 bzImage"),
    "image-gz": (
        lambda p: p.write_bytes(gzip.compress(_arm64_image() + os.urandom(4096))),
        "gzip-compressed",
    ),
    "empty": (lambda p: p.write_bytes(b""), "only 0 bytes long"),
    "directory": (lambda p: p.mkdir(), "not a regular file"),
    "missing": (None, "no such file"),
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_cli_kernel_that_is_not_an_arm64_image(name, tmp_path, fault_recorder):
    make, what = KERNELS[name]
    image = tmp_path / name
    if make:
        make(image)
    e2e(
        fault_recorder,
        f"--kernel {name}",
        tmp_path,
        ["--lab=qemu", f"--kernel={image}"],
        [f"--kernel {image}: ", what, "patched|stock"],
    )


# The plugin provisions lazily: the cache is first written when a test asks for a board, so
# an unusable cache fails that test (exit 1) with the one-line error, not the run (exit 4).
LAZY = (pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.USAGE_ERROR)
BUILD_TOOLS = ("aarch64-linux-gnu-gcc", "make", "flex", "bison", "bc", "ccache", "rsync")


def fake_kernel_tree(tmp: Path) -> Path:
    """A --kernel-src that digests in microseconds (the real tarball takes a second per run);
    nothing may get as far as building it."""
    src = tmp / "linux"
    (src / "arch" / "arm64").mkdir(parents=True)
    (src / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 12\n")
    return src


@pytest.fixture
def build_tools() -> None:
    missing = [t for t in BUILD_TOOLS if not shutil.which(t)]
    if missing:  # ci/setup installs them; without them the first error is the missing tool
        pytest.skip(f"build tools missing: {', '.join(missing)}")


@pytest.mark.parametrize("where_", ["below-a-file", "is-a-file", "in-sysfs"])
def test_cli_unwritable_cache_dir(where_, tmp_path, fault_recorder, build_tools):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way\n")
    cache, why = {
        "below-a-file": (blocker / "cache", "Not a directory"),
        "is-a-file": (blocker, "it is a file, not a directory"),
        "in-sysfs": (Path("/sys/vfio-platform-cache"), ""),
    }[where_]
    if where_ == "in-sysfs":  # EPERM on sysfs, EROFS where /sys is mounted read-only
        try:
            cache.mkdir()
            cache.rmdir()
            pytest.skip("a writable /sys: nothing to refuse")
        except OSError as e:
            why = e.strerror
    e2e(
        fault_recorder,
        f"--cache-dir {where_}",
        tmp_path,
        ["--lab=qemu", f"--cache-dir={cache}", f"--kernel-src={fake_kernel_tree(tmp_path)}"],
        [f"cache directory {cache} is not writable ({why})", "--cache-dir"],
        exit_codes=LAZY,
        cache=cache,
        probe=BOARD_PROBE,
    )
    assert blocker.read_text() == "in the way\n"


# -- a full disk under the cache ----------------------------------------------------------------


def _put_entry(cache: ArtifactCache, key: str = "0" * 32) -> Path:
    """A complete entry that must survive whatever happens next."""

    def build(out: Path) -> dict:
        (out / "board.dtb").write_bytes(os.urandom(4096))
        return {"note": "existing entry"}

    return cache.get_or_build("dtb", key, build)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path | None]:
    """A 1.5 MiB tmpfs (we run as root in CI), or None where mounting is not allowed."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1536k,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
    )
    if r.returncode != 0:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(fs: Path) -> None:
    """Write until the filesystem says ENOSPC, in smaller and smaller pieces."""
    fd = os.open(fs / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)


def test_cli_full_disk_under_the_cache(tmp_path, tiny_tmpfs, fault_recorder, build_tools):
    if tiny_tmpfs is None:
        pytest.skip("cannot mount a tmpfs here; test_full_disk_* cover it in-process")
    cache = tiny_tmpfs / "cache"
    _put_entry(ArtifactCache(cache))
    _fill(tiny_tmpfs)
    e2e(
        fault_recorder,
        "--cache-dir on a full disk (tmpfs)",
        tmp_path,
        ["--lab=qemu", f"--cache-dir={cache}", f"--kernel-src={fake_kernel_tree(tmp_path)}"],
        [f"no space left on the device holding the cache {cache}", "free space", "--cache-dir"],
        exit_codes=LAZY,
        cache=cache,
        probe=BOARD_PROBE,
    )


class _Strike:
    """Where the disk says no: patches one OS-level call (or the stdlib call wrapping it) so
    it fails with errno `err`, as on a full disk, a quota or a read-only filesystem."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, point: str, err: int) -> None:
        self.mp, self.point, self.err = monkeypatch, point, err

    def fail(self, *args: object, **kwargs: object) -> None:
        name = next((str(a) for a in args if isinstance(a, (str, Path))), None)
        raise OSError(self.err, os.strerror(self.err), name)

    def arm(self) -> None:
        mp, fail = self.mp, self.fail
        real_write_text, real_rename = Path.write_text, os.rename
        if self.point == "lock-file":
            real_open = builtins.open
            mp.setattr(
                builtins,
                "open",
                lambda f, *a, **k: fail(f) if str(f).endswith(".lock") else real_open(f, *a, **k),
            )
        elif self.point == "probe":
            mp.setattr(tempfile, "NamedTemporaryFile", fail)
        elif self.point == "statvfs":
            mp.setattr(
                os,
                "statvfs",
                lambda p: os.statvfs_result((4096, 4096, 384, 0, 0, 100, 90, 90, 0, 255)),
            )
        elif self.point == "tempdir":
            mp.setattr(tempfile, "mkdtemp", fail)
        elif self.point == "artifact-data":
            mp.setattr(os, "sendfile", fail)  # shutil.copyfile's fast path on Linux
        elif self.point == "manifest":
            mp.setattr(
                Path,
                "write_text",
                lambda p, *a, **k: (
                    fail(p) if p.name == "manifest.json" else real_write_text(p, *a, **k)
                ),
            )
        elif self.point == "fsync":
            mp.setattr(os, "fsync", fail)
        elif self.point == "rename":
            mp.setattr(
                os, "rename", lambda a, b: fail(b) if ".tmp-" in str(a) else real_rename(a, b)
            )
        else:
            raise AssertionError(self.point)


# ENOSPC at every step; EDQUOT (a quota, not a full disk) at the steps a quota hits alike.
SPACE_CASES = [
    (point, errno.ENOSPC)
    for point in (
        "statvfs",
        "probe",
        "lock-file",
        "tempdir",
        "artifact-data",
        "manifest",
        "fsync",
        "rename",
    )
] + [(point, errno.EDQUOT) for point in ("probe", "tempdir", "manifest", "fsync")]


def _copying_build(src: Path) -> Callable[[Path], dict]:
    def build(out: Path) -> dict:
        shutil.copyfile(src, out / "Image")  # as the kernel builder does
        return {"release": "6.12.0"}

    return build


@pytest.mark.parametrize(
    ("point", "err"), SPACE_CASES, ids=[f"{p}-{errno.errorcode[e]}" for p, e in SPACE_CASES]
)
def test_full_disk_while_publishing(point, err, tmp_path, monkeypatch, fault_recorder):
    """The disk fills at each step of publishing an entry: a clear error, nothing partial, the
    existing entry intact, and the cache works again once there is space."""
    root = tmp_path / "cache"
    cache = ArtifactCache(root)
    _put_entry(cache)
    image = tmp_path / "Image"
    image.write_bytes(_arm64_image() * 64)
    before = cache_state(root)
    key = "1" * 32
    msg = ""
    with monkeypatch.context() as mp:
        _Strike(mp, point, err).arm()
        try:
            cache.get_or_build("dtb", key, _copying_build(image))
            msg = "no error"
        except VfioPlatformError as e:
            msg = str(e)
        except Exception as e:  # noqa: BLE001
            msg = f"{type(e).__name__} escaped: {e}"
    survived = all(s in msg for s in ("no space left", str(root), "free space", "--cache-dir"))
    lost = cache_problems(root, before)
    # once space is back the same entry builds (no lock held, no leftover in the way)
    recovered = cache.get_or_build("dtb", key, _copying_build(image))
    fault_recorder.record(
        CLS,
        f"cache: {errno.errorcode[err]} at {point}",
        survived,
        bool(lost),
        "; ".join(lost) or msg,
    )
    assert survived, msg
    assert not lost, lost
    assert (recovered / "Image").read_bytes() == image.read_bytes()


def test_full_disk_on_a_real_tmpfs(tmp_path, tiny_tmpfs, fault_recorder):
    """Not simulated: the kernel says ENOSPC half-way through copying a 1.25 MiB artifact
    (more than the 1 MiB the pre-flight check asks for is free, less than the artifact)."""
    if tiny_tmpfs is None:
        pytest.skip("cannot mount a tmpfs here; test_full_disk_while_publishing simulates it")
    root = tiny_tmpfs / "cache"
    cache = ArtifactCache(root)
    _put_entry(cache)
    before = cache_state(root)
    big = tmp_path / "Image"
    big.write_bytes(os.urandom(1280 << 10))
    # leave more than the pre-flight minimum (1 MiB) but less than the artifact
    st_ = os.statvfs(tiny_tmpfs)
    with open(tiny_tmpfs / "filler", "wb") as f:
        f.write(b"\0" * (st_.f_bfree * st_.f_frsize - (1100 << 10)))
    msg = ""
    try:
        ArtifactCache(root).get_or_build("kernel", "2" * 32, _copying_build(big))
        msg = "no error"
    except VfioPlatformError as e:
        msg = str(e)
    survived = all(s in msg for s in ("no space left", str(root), "while writing kernel artifact"))
    lost = cache_problems(root, before)
    fault_recorder.record(
        CLS, "cache: real ENOSPC on a tmpfs", survived, bool(lost), "; ".join(lost) or msg
    )
    assert survived, msg
    assert not lost, lost


@pytest.mark.parametrize("how", ["EROFS", "EACCES", "file-in-the-way"])
def test_unwritable_cache_in_process(how, tmp_path, monkeypatch, fault_recorder):
    """A read-only or forbidden cache (root ignores modes, so EROFS and EACCES are injected at
    the OS boundary; a file where a directory should be is real): a clear error on a miss,
    and the entries an unwritable cache holds are still served."""
    root = tmp_path / "cache"
    cache = ArtifactCache(root)
    existing = _put_entry(cache)
    before = cache_state(root)
    with monkeypatch.context() as mp:
        if how == "file-in-the-way":  # nothing can be kept below a file: no hit to serve
            blocker = tmp_path / "file"
            blocker.write_text("not a dir")
            cache, why, hit = ArtifactCache(blocker / "cache"), "Not a directory", existing
        else:
            err = getattr(errno, how)
            _Strike(mp, "probe", err).arm()
            why = os.strerror(err)
            hit = cache.get_or_build("dtb", "0" * 32, lambda out: pytest.fail("rebuilt a hit"))
        try:
            cache.get_or_build("dtb", "3" * 32, lambda out: {})
            msg = "no error"
        except VfioPlatformError as e:
            msg = str(e)
    expect = (f"cache directory {cache.root} is not writable ({why})", "--cache-dir")
    survived = hit == existing and all(s in msg for s in expect)
    lost = cache_problems(root, before)
    fault_recorder.record(
        CLS, f"cache unwritable: {how}", survived, bool(lost), "; ".join(lost) or msg
    )
    assert survived, msg
    assert not lost, lost
