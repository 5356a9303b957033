"""Load and validate a lab definition (labs/NAME.yaml), with errors that name file and key.

Why our own validation: a lab file is edited by hand by lab engineers; a typo must end in
"labs/x.yaml: devices[1].mmio.base: expected an integer, got 'x'", not a KeyError three layers
down during a boot. The labgrid section is passed to labgrid as is (it validates its own),
except what the plugin relies on: target `main` and the images its QEMUDriver names, which
labgrid would only miss at the first boot, after minutes of building.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import BuildError, LabError
from .images.dtb import DtEdit, dts_value

LABS_DIR = Path(__file__).resolve().parent / "labs"
DEVICE_CLASSES = ("uart", "gpio", "rtc", "timer")
BUSES = ("platform", "amba")
# qemu: booted here by labgrid's QEMUDriver; rack: a place; or MODULE:CLASS, a Board subclass
# of the lab's own (pytest_vfio_platform.boards)
BOARD_TYPES = ("qemu", "rack")
STIMULI = ("uart-socket", "qmp-powerdown", "rtc-match", "self-timed", "none")
SELF_TIMED = ("rtc-match", "self-timed")  # the device interrupts by itself once set up


@dataclass(frozen=True)
class Stimulus:
    kind: str
    setup: str = ""
    ack: str = ""
    socket: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class ResetCheck:
    """How to leave the device dirty as a VMM could (`dirty`, agent OPS), and what its next
    owner must read after the kernel reset it: (offset, mask, value) per register."""

    dirty: str
    expect: tuple[tuple[int, int, int], ...]
    clock: int | None = None  # a seconds counter that must go on as the wall clock (RTC)


@dataclass(frozen=True)
class Device:
    name: str
    cls: str
    sysfs: str
    bus: str
    compatible: str
    mmio_base: int
    mmio_size: int
    irq_spi: int
    irq_trigger: str
    id_registers: dict[str, tuple[int, int]]
    stimulus: Stimulus
    host_driver: str | None = None
    variant: str = "default"
    # DT properties of the device's node in an L2 guest beyond what placement gives
    # (compatible, reg, interrupts): clock-names (each gets the guest's APB clock),
    # gpio-controller, #gpio-cells, ... — inventory, so a new device class is YAML only
    guest_dt: dict[str, Any] = field(default_factory=dict)
    reset: ResetCheck | None = None

    @property
    def level_triggered(self) -> bool:
        return self.irq_trigger.startswith("level")


@dataclass(frozen=True)
class Refused:
    name: str
    cls: str
    sysfs: str
    bus: str
    reason: str
    variant: str = "default"


@dataclass(frozen=True)
class Variant:
    name: str
    dtb: tuple[DtEdit, ...]
    vfio_args: str
    guest: bool = False  # the board carries an L2 guest (kernel, initramfs) for guest suites
    # the VFIO driver a device is bound to, per bus (driver_override)
    vfio_driver: dict[str, str] = field(default_factory=lambda: dict(VFIO_DRIVER))


@dataclass(frozen=True)
class RackSpec:
    """Boards shared through a labgrid coordinator (places), not started by the test."""

    coordinator: str  # host:port; LG_COORDINATOR overrides the lab file
    tags: dict[str, str]  # a session reserves places carrying all of these
    boot: str  # fastboot-net: fastboot over TCP, reachable from here; fastboot-usb: on the exporter
    bootimg_header: int  # Android boot image header version (2 carries a DTB, 4 is GKI)
    exporter: str = ""  # the exporter's name (local racks start it themselves)
    local_boards: int = 0  # >0: `labsim.local up` runs this many QEMU boards here
    place_prefix: str = "board-"


BOOT_METHODS = ("fastboot-net", "fastboot-usb")
# The change under test: one driver, for both buses, that admits only the blocks it knows
# cannot do DMA. A variant can name the generic drivers instead (the noiommu baseline).
VFIO_DRIVER = {"platform": "vfio-platform-nodma", "amba": "vfio-platform-nodma"}


def with_place(lab: Lab, spec: str) -> Lab:
    """--place: a place name (the coordinator matches tag `name`) or TAG=VALUE pairs,
    replacing the lab's rack.tags for this run."""
    if lab.rack is None:
        raise LabError(f"--place {spec}: lab {lab.name} is not a rack ({lab.path})")
    tags: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        k, eq, v = part.partition("=")
        k, v = (k, v) if eq else ("name", k)
        if not re.fullmatch(r"[a-z][a-z0-9_]+", k) or not re.fullmatch(r"[a-z0-9_-]+", v):
            raise LabError(f"--place {spec}: {part!r} is not NAME or TAG=VALUE (a-z, 0-9, _ -)")
        tags[k] = v
    if not tags:
        raise LabError(f"--place {spec!r}: empty")
    return dataclasses.replace(lab, rack=dataclasses.replace(lab.rack, tags=tags))


@dataclass
class Lab:
    name: str
    path: Path
    description: str
    board_type: str
    prompt: str
    machine_args: list[str]
    uart_sockets: list[str]
    boot_args: str
    variants: dict[str, Variant]
    labgrid: dict[str, Any]
    devices: list[Device] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    rack: RackSpec | None = None

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise LabError(
            f"{self.path}: no device named '{name}' (have: {', '.join(d.name for d in self.devices)})"
        )


LAB_PATH_ENV = "VFIO_LAB_PATH"


def lab_dirs() -> list[Path]:
    """Where lab NAMEs are looked up: the directories in $VFIO_LAB_PATH (colon-separated, as
    --lab-dir sets it; first wins, so a lab of one's own can shadow a shipped one), then the
    labs shipped in the package."""
    extra = [Path(d) for d in os.environ.get(LAB_PATH_ENV, "").split(os.pathsep) if d]
    return [*extra, LABS_DIR]


def available_labs() -> list[str]:
    return sorted({p.stem for d in lab_dirs() for p in d.glob("*.yaml")})


def resolve(name_or_path: str) -> Path:
    """A lab NAME (looked up in lab_dirs()) or a PATH to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not p.is_file():
            raise LabError(f"--lab {name_or_path}: no such file")
        return p.resolve()
    for d in lab_dirs():
        cand = d / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand.resolve()
    raise LabError(
        f"--lab {name_or_path}: unknown lab; available: {', '.join(available_labs())} "
        f"(looked in {', '.join(str(d) for d in lab_dirs())}; or pass a path to a lab YAML file)"
    )


@dataclass(frozen=True)
class Shape:
    """What a name that reaches a shell or a command line may look like. A lab file runs as
    root (on the board, and in the lab's own process): sysfs names go into the board's shell
    and into QEMU's `-device vfio-platform,host=...`, compatibles and node paths into DT
    source built on the board. Strict patterns, so a stray quote, `;` or `,` is an error
    naming the key, not a command."""

    regex: re.Pattern
    what: str


SYSFS = Shape(re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*"), "a sysfs device name like 9000000.pl011")
COMPATIBLE = Shape(
    re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*(,[A-Za-z0-9._+-]+)?"), "a compatible like arm,pl011"
)
DRIVER = Shape(re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*"), "a driver name like uart-pl011")
NAME = Shape(re.compile(r"[A-Za-z][A-Za-z0-9_-]*"), "a name of letters, digits, - and _")
DT_PATH = Shape(
    re.compile(r"/|(/[A-Za-z0-9][A-Za-z0-9,._+@-]*)+"), "an absolute DT path like /pl061@9030000"
)
BOARD_CLASS = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
DT_PROP = Shape(re.compile(r"[A-Za-z0-9#][A-Za-z0-9,._+#?-]*"), "a DT property or node name")
# dtc reads files named in these: a lab's DTS must not pull in the host's files
DTS_FORBIDDEN = re.compile(r"/incbin/|/include/")
HEREDOC_END = "VFIO_EOF"  # how DT source reaches the board's shell (guest/qemu.py)


def check_dts(v: _V, key: str, text: str) -> str:
    m = DTS_FORBIDDEN.search(text)
    if m:
        raise v.fail(key, f"{m.group(0)} is not allowed in a lab's DTS (dtc would read a file)")
    if any(line.strip() == HEREDOC_END for line in text.splitlines()):
        raise v.fail(key, f"a line {HEREDOC_END} would end the DT source sent to the board")
    return text


class _V:
    """Typed access to a YAML mapping that reports the file and dotted key on error."""

    def __init__(self, path: Path, data: Any, where: str = "") -> None:
        self.path, self.data, self.where = path, data, where

    def fail(self, key: str, msg: str) -> LabError:
        loc = f"{self.where}.{key}" if self.where and key else (self.where or key or "top level")
        return LabError(f"{self.path}: {loc}: {msg}")

    def _get(self, key: str, required: bool) -> Any:
        if not isinstance(self.data, dict):
            raise self.fail("", f"expected a mapping, got {_kind(self.data)}")
        v = self.data.get(key)
        if v is None and required:  # `key:` with nothing after it is as good as absent
            raise self.fail(key, "missing (required)" if key not in self.data else "empty")
        return v

    def str(
        self,
        key: str,
        default: str | None = None,
        required: bool = True,
        choices: tuple = (),
        shape: Shape | None = None,
    ) -> Any:
        v = self._get(key, required and default is None)
        if v is None:
            return default
        if not isinstance(v, str):
            raise self.fail(key, f"expected a string, got {_show(v)}")
        if choices and v not in choices:
            raise self.fail(key, f"expected one of {', '.join(choices)}, got {_show(v)}")
        if shape is not None and not shape.regex.fullmatch(v):
            raise self.fail(key, f"expected {shape.what}, got {_show(v)}")
        return v

    def int(self, key: str, required: bool = True) -> Any:
        v = self._get(key, required)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(key, f"expected an integer, got {_show(v)}")
        return v

    def sub(self, key: str, required: bool = True, kind: type = dict) -> Any:
        v = self._get(key, required)
        if v is None:
            return None
        if not isinstance(v, kind):
            raise self.fail(
                key, f"expected a {'mapping' if kind is dict else 'list'}, got {_kind(v)}"
            )
        return v

    def child(self, key: str, index: int | None = None) -> _V:
        v = self.data[key] if index is None else self.data[key][index]
        where = f"{self.where}.{key}" if self.where else key
        if index is not None:
            where += f"[{index}]"
        return _V(self.path, v, where)

    def check_keys(self, allowed: set[str]) -> None:
        if not isinstance(self.data, dict):
            raise self.fail("", f"expected a mapping, got {_kind(self.data)}")
        extra = [k for k in self.data if k not in allowed]  # YAML keys need not be strings
        if extra:
            raise self.fail(_key(extra[0]), f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def strings(self, key: str, numbers: bool = False, shape: Shape | None = None) -> list[str]:
        """An optional list of strings (numbers too where `-smp, 2` is natural), each of
        the shape given."""
        items = self.sub(key, required=False, kind=list) or []
        ok = (str, int, float) if numbers else (str,)
        for n, a in enumerate(items):
            if isinstance(a, bool) or not isinstance(a, ok):
                raise self.fail(f"{key}[{n}]", f"expected a string, got {_show(a)}")
            if shape is not None and not shape.regex.fullmatch(str(a)):
                raise self.fail(f"{key}[{n}]", f"expected {shape.what}, got {_show(a)}")
        return [str(a) for a in items]


def _vfio_driver(v: _V, base: dict[str, str]) -> dict[str, str]:
    """`vfio_driver: {platform: D, amba: D}`, each bus optional (inherits `base`)."""
    spec = v.sub("vfio_driver", required=False)
    if spec is None:
        return base
    d = v.child("vfio_driver")
    d.check_keys(set(BUSES))
    return {bus: d.str(bus, base[bus], shape=DRIVER) for bus in BUSES}


def _kind(v: object) -> str:
    """A value's kind in YAML's words (a lab author never wrote 'NoneType')."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true/false"
    names = {dict: "mapping", list: "list", str: "string", int: "integer", float: "number"}
    return names.get(type(v), type(v).__name__)


def _show(v: object) -> str:
    """A value for a message: a whole replaced section is summarised, not dumped."""
    if isinstance(v, (dict, list)):
        return f"a {_kind(v)}"
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _board_type(b: _V) -> str:
    v = b.str("type")
    if v not in BOARD_TYPES and not BOARD_CLASS.fullmatch(v):
        raise b.fail(
            "type", f"expected one of {', '.join(BOARD_TYPES)} or MODULE:CLASS, got {_show(v)}"
        )
    return v


def _key(k: object) -> str:
    """A mapping key as the lab file spells it (`true:`, `1:` are keys too)."""
    if isinstance(k, str) and k:
        return k
    return json.dumps(k) if k is None or isinstance(k, (bool, int, float)) else repr(k)


def _dt_props(e: _V, key: str) -> dict[str, Any]:
    """A mapping of DT property -> value (string, cells, [] for a flag, {raw: DTS})."""
    props = e.sub(key, required=False) or {}
    for k, val in props.items():
        if not isinstance(k, str) or not DT_PROP.regex.fullmatch(k):
            raise e.fail(f"{key}.{_key(k)}", f"expected {DT_PROP.what} as the key")
        if isinstance(val, dict):  # {raw: DTS text}, nothing else
            raw = _V(e.path, val, f"{e.where}.{key}.{_key(k)}")
            raw.check_keys({"raw"})
            check_dts(raw, "raw", raw.str("raw"))
        if isinstance(val, list) and any(isinstance(x, bool) for x in val):
            raise e.fail(f"{key}.{_key(k)}", f"true/false is not a DT cell or string: {val!r}")
        try:
            dts_value(val)
        except BuildError as err:
            raise e.fail(f"{key}.{_key(k)}", str(err)) from None
    return props


GUEST_DT_GENERATED = ("compatible", "reg", "interrupts", "clocks")


def _guest_dt(d: _V) -> dict[str, Any]:
    props = _dt_props(d, "guest_dt")
    for k in GUEST_DT_GENERATED:
        if k in props:
            raise d.fail(f"guest_dt.{k}", "set from the device's placement in the guest; drop it")
    names = props.get("clock-names", ["apb_pclk"])
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise d.fail("guest_dt.clock-names", f"expected a list of clock names, got {_show(names)}")
    return props


def _edits(v: _V, key: str) -> tuple[DtEdit, ...]:
    items = v.sub(key, required=False, kind=list) or []
    out = []
    for i in range(len(items)):
        e = v.child(key, i)
        e.check_keys({"node", "set", "delete", "dts"})
        node = e.str("node", shape=DT_PATH)
        props = _dt_props(e, "set")
        out.append(
            DtEdit(
                node=node,
                set=props,
                delete=tuple(e.strings("delete", shape=DT_PROP)),
                dts=check_dts(e, "dts", e.str("dts", "")),
            )
        )
    return tuple(out)


class _LabLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: YAML forbids it, and PyYAML
    would silently keep the last one (a second `devices:` would drop the first inventory)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base class says so
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {first})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _read(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise LabError(f"{path}: cannot read the lab file ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise LabError(
            f"{path}: line {line}: not UTF-8 text (byte {raw[e.start]:#04x}); save it as UTF-8"
        ) from None
    try:
        return yaml.load(text, Loader=_LabLoader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        elif isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow
            where = f"line {text[: e.position].count(chr(10)) + 1}: "
        else:
            where = ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise LabError(f"{path}: {where}not valid YAML: {problem}") from None


def _inherit(path: Path, data: dict, seen: tuple[Path, ...] = ()) -> dict:
    """`inherit: NAME`: start from another lab's file (the same board hardware and inventory
    reached another way, e.g. the QEMU board through a rack); this file's keys win, and
    `board` is merged key by key."""
    base_name = data.get("inherit")
    if base_name is None:
        return data
    top = _V(path, data)
    if not isinstance(base_name, str):
        raise top.fail("inherit", f"expected a lab name, got {base_name!r}")
    try:
        base_path = resolve(base_name)
    except LabError as e:
        raise top.fail("inherit", str(e)) from None
    if base_path in seen or base_path == path:
        raise top.fail("inherit", f"inheritance loop through {base_path}")
    base = _read(base_path)
    if not isinstance(base, dict):
        raise _V(base_path, base).fail("", "expected a mapping")
    base = _inherit(base_path, base, (*seen, path))
    merged = {k: v for k, v in base.items() if k != "name"}
    for k, v in data.items():
        if k == "inherit":
            continue
        if k == "board" and isinstance(v, dict) and isinstance(merged.get("board"), dict):
            merged["board"] = {**merged["board"], **v}
        else:
            merged[k] = v
    return merged


def _rack(top: _V) -> RackSpec | None:
    if top.sub("rack", required=False) is None:
        return None
    r = top.child("rack")
    r.check_keys(
        {
            "coordinator",
            "tags",
            "boot",
            "bootimg_header",
            "exporter",
            "local_boards",
            "place_prefix",
        }
    )
    tags = r.sub("tags", required=False) or {}
    for k, v in tags.items():
        if not (isinstance(k, str) and re.fullmatch(r"[a-z][a-z0-9_]+", k)):
            raise r.fail("tags", f"tag name {k!r} must match [a-z][a-z0-9_]+ (labgrid's rule)")
        if not (isinstance(v, str) and re.fullmatch(r"[a-z0-9_-]+", v)):
            raise r.fail(f"tags.{k}", f"tag value {v!r} must match [a-z0-9_-]+")
    coordinator = os.environ.get("LG_COORDINATOR") or r.str("coordinator", "127.0.0.1:20408")
    if not re.fullmatch(r"[\w.\-\[\]:]+:\d+", coordinator):
        raise r.fail("coordinator", f"expected HOST:PORT, got {coordinator!r}")
    header = r.int("bootimg_header", required=False) or 2
    if header not in (2, 3, 4):
        raise r.fail("bootimg_header", f"expected 2, 3 or 4, got {header}")
    boards = r.int("local_boards", required=False) or 0
    if boards < 0:
        raise r.fail("local_boards", f"expected a count >= 0, got {boards}")
    return RackSpec(
        coordinator=coordinator,
        tags={str(k): str(v) for k, v in tags.items()},
        boot=r.str("boot", "fastboot-net", choices=BOOT_METHODS),
        bootimg_header=header,
        exporter=r.str("exporter", ""),
        local_boards=boards,
        place_prefix=r.str("place_prefix", "board-"),
    )


def load(name_or_path: str) -> Lab:
    path = resolve(name_or_path)
    data = _read(path)
    top = _V(path, data)
    if not isinstance(data, dict):
        raise top.fail("", "expected a mapping with name, board, labgrid, devices")
    top.check_keys(
        {"name", "description", "inherit", "board", "labgrid", "devices", "refused", "rack"}
    )
    data = _inherit(path, data)
    top = _V(path, data)
    b = top.child("board") if top.sub("board") is not None else None
    assert b is not None
    b.check_keys(
        {
            "type",
            "prompt",
            "machine_args",
            "uart_sockets",
            "boot_args",
            "vfio_args",
            "vfio_driver",
            "dtb",
            "variants",
        }
    )
    base_edits = _edits(b, "dtb")
    base_args = b.str("vfio_args", "")
    base_driver = _vfio_driver(b, dict(VFIO_DRIVER))
    variants: dict[str, Variant] = {}
    vs = b.sub("variants", required=False) or {"default": {}}
    if "default" not in vs:
        raise b.fail("variants", "a 'default' variant is required")
    for name, spec in vs.items():
        if not isinstance(name, str):
            raise b.fail(f"variants.{_key(name)}", "a variant name is a string")
        vv = _V(path, {} if spec is None else spec, f"board.variants.{name}")
        vv.check_keys({"dtb", "vfio_args", "vfio_driver", "guest"})
        guest = vv.data.get("guest", False)
        if not isinstance(guest, bool):
            raise vv.fail("guest", f"expected true or false, got {_show(guest)}")
        edits = base_edits + _edits(vv, "dtb")
        variants[name] = Variant(
            name, edits, vv.str("vfio_args", base_args), guest, _vfio_driver(vv, base_driver)
        )
    lab = Lab(
        name=top.str("name"),
        path=path,
        description=top.str("description", ""),
        board_type=_board_type(b),
        prompt=b.str("prompt"),
        machine_args=b.strings("machine_args", numbers=True),
        uart_sockets=b.strings("uart_sockets", shape=NAME),
        boot_args=b.str("boot_args", ""),
        variants=variants,
        labgrid=top.sub("labgrid", required=b.data.get("type") != "rack") or {},
        rack=_rack(top),
    )
    if lab.board_type == "rack" and lab.rack is None:
        raise top.fail("rack", "missing: a board of type rack needs a rack section")
    if lab.board_type == "qemu":
        _qemu_images(top.child("labgrid"))
    for i in range(len(top.sub("devices", kind=list))):
        lab.devices.append(_device(top.child("devices", i), lab))
    for i in range(len(top.sub("refused", required=False, kind=list) or [])):
        r = top.child("refused", i)
        r.check_keys({"name", "class", "sysfs", "bus", "reason", "variant"})
        var = r.str("variant", "default")
        if var not in variants:
            raise r.fail(
                "variant", f"unknown variant {var!r} (board.variants has {', '.join(variants)})"
            )
        lab.refused.append(
            Refused(
                r.str("name", shape=NAME),
                r.str("class"),
                r.str("sysfs", shape=SYSFS),
                r.str("bus", choices=BUSES),
                r.str("reason"),
                var,
            )
        )
    names = [d.name for d in lab.devices] + [r.name for r in lab.refused]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise top.fail("devices", f"duplicate device name(s): {', '.join(sorted(dup))}")
    return lab


QEMU_IMAGES = ("kernel", "dtb", "disk", "flash", "bios")  # QEMUDriver keys naming an image


def _qemu_images(lg: _V) -> None:
    """The part of the labgrid section the plugin relies on: target `main`, and every image
    its QEMUDriver names listed under `images`, each a {placeholder} or an existing file.
    Checked here because labgrid would only notice at the first boot, after the builds."""
    targets = lg.child("targets") if lg.sub("targets") is not None else None
    assert targets is not None
    main = targets.child("main") if targets.sub("main") is not None else None
    assert main is not None
    images = lg.child("images") if lg.sub("images", required=False) is not None else None
    have = images.data if images else {}
    for name, value in have.items():
        if not isinstance(value, str):
            raise images.fail(
                _key(name), f"expected a path or a {{placeholder}}, got {_show(value)}"
            )
        if "{" not in value and not Path(value).is_file():
            raise images.fail(
                _key(name), f"{value}: no such file (an absolute path, or {{kernel}}/{{dtb}}...)"
            )
    drivers = main.data.get("drivers")  # labgrid also takes a list form: left to labgrid
    qemu = drivers.get("QEMUDriver") if isinstance(drivers, dict) else None
    if not isinstance(qemu, dict):
        return
    q = main.child("drivers").child("QEMUDriver")
    for attr in QEMU_IMAGES:
        ref = qemu.get(attr)
        if ref is None:
            continue
        if not isinstance(ref, str):
            raise q.fail(attr, f"expected the name of an image in labgrid.images, got {_show(ref)}")
        if ref not in have:
            raise q.fail(
                attr,
                f"image {ref!r} is not in labgrid.images (have: {', '.join(map(str, have)) or 'none'}); "
                f'add it there (e.g. {ref}: "{{{attr}}}") or drop the reference',
            )


def _device(d: _V, lab: Lab) -> Device:
    d.check_keys(
        {
            "name",
            "class",
            "sysfs",
            "bus",
            "compatible",
            "host_driver",
            "mmio",
            "irq",
            "id_registers",
            "stimulus",
            "variant",
            "guest_dt",
            "reset",
        }
    )
    m = d.child("mmio") if d.sub("mmio") is not None else None
    i = d.child("irq") if d.sub("irq") is not None else None
    assert m and i
    m.check_keys({"base", "size"})
    i.check_keys({"spi", "trigger"})
    ids: dict[str, tuple[int, int]] = {}
    idr = d.sub("id_registers", required=False) or {}
    for k in idr:
        r = d.child("id_registers")
        rr = r.child(k)
        rr.check_keys({"offset", "value"})
        ids[k] = (rr.int("offset"), rr.int("value"))
    st = (
        d.child("stimulus")
        if d.sub("stimulus", required=False) is not None
        else _V(lab.path, {"kind": "none"})
    )
    st.check_keys({"kind", "setup", "ack", "socket", "line"})
    stim = Stimulus(
        kind=st.str("kind", choices=STIMULI),
        setup=st.str("setup", ""),
        ack=st.str("ack", ""),
        socket=st.str("socket", required=False),
        line=st.int("line", required=False),
    )
    if stim.kind == "uart-socket" and stim.socket not in lab.uart_sockets:
        raise st.fail(
            "socket", f"{stim.socket!r} is not one of board.uart_sockets {lab.uart_sockets}"
        )
    variant = d.str("variant", "default")
    if variant not in lab.variants:
        raise d.fail(
            "variant", f"unknown variant {variant!r} (board.variants has {', '.join(lab.variants)})"
        )
    return Device(
        name=d.str("name", shape=NAME),
        cls=d.str("class", choices=DEVICE_CLASSES),
        sysfs=d.str("sysfs", shape=SYSFS),
        bus=d.str("bus", choices=BUSES),
        compatible=d.str("compatible", shape=COMPATIBLE),
        host_driver=d.str("host_driver", required=False, shape=DRIVER),
        mmio_base=m.int("base"),
        mmio_size=m.int("size"),
        irq_spi=i.int("spi"),
        irq_trigger=i.str(
            "trigger", choices=("level-high", "level-low", "edge-rising", "edge-falling")
        ),
        id_registers=ids,
        stimulus=stim,
        variant=variant,
        guest_dt=_guest_dt(d),
        reset=_reset(d),
    )


def _reset(d: _V) -> ResetCheck | None:
    if d.sub("reset", required=False) is None:
        return None
    r = d.child("reset")
    r.check_keys({"dirty", "expect", "clock"})
    r.sub("expect")
    e = r.child("expect")
    expect = []
    for off in e.data:
        if isinstance(off, bool) or not isinstance(off, int):
            raise e.fail(_key(off), "a register offset is an integer (like 0x30)")
        if isinstance(e.data[off], dict):
            v = e.child(off)
            v.check_keys({"mask", "value"})
            expect.append((off, v.int("mask"), v.int("value")))
        else:
            expect.append((off, 0xFFFFFFFF, e.int(off)))
    if not expect:
        raise r.fail("expect", "name at least one register the reset must set")
    return ResetCheck(
        dirty=r.str("dirty"), expect=tuple(expect), clock=r.int("clock", required=False)
    )
