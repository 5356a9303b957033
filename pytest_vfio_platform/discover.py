"""`vfio-lab-serial`: list the USB serial adapters of a lab host and print, for each, the labgrid
`USBSerialPort` resource that finds exactly that adapter again after a reboot or a re-plug.

Why this exists: a device lab's boards (Pixel phones) reach the lab host as USB serial
consoles, and `/dev/ttyUSB3` names whichever adapter enumerated fourth, so a lab file must
name an adapter by its udev properties instead. Picking those properties by hand is where
labs go wrong: FTDI clones share one serial number, multi-port chips give every port the
same serial, and cheap chips have none. This command makes that choice from what udev
actually reports, using the same matching rules labgrid applies
(`labgrid/resource/udev.py`, `USBResource.try_match`):

- a plain key (`ID_SERIAL_SHORT`) must equal a udev property (or sysfs attribute) of the tty
  device itself; a key starting with `@` (`@ID_PATH`) must equal one of *any* ancestor;
- the choice, per adapter: `ID_SERIAL_SHORT` (follows the adapter to any USB port), plus
  `ID_USB_INTERFACE_NUM` when the same USB device carries several ports (FT2232H/FT4232H);
  the physical port `@ID_PATH` (the USB device's path; plus `ID_USB_INTERFACE_NUM` for a
  multi-port chip) when the adapter has no serial or when another USB device reports the
  same serial, since a serial that names two devices identifies neither.

udev, not the kernel, sets those `ID_*` properties: without a running systemd-udevd pyudev
sees none (DESIGN.md §6), and no labgrid match on them can succeed.

Exit status: 0 when at least one adapter is listed (with `--yaml`: at least one snippet
printed), 1 when there is nothing to list (the message says what was looked at, so an empty
`resources:` block is never written into a lab file by `vfio-lab-serial --yaml > ...`),
2 for a usage error or when libudev cannot be used at all.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import pyudev  # pure Python: libudev itself is loaded by pyudev.Context(), see _context()
import yaml

from .errors import SetupError, VfioPlatformError

PROG = "vfio-lab-serial"
UDEVD_CONTROL = "/run/udev/control"  # the socket systemd-udevd listens on while it runs


@dataclass(frozen=True)
class Adapter:
    """One USB serial port as udev sees it: its tty and the USB device it belongs to.

    The `ID_*` fields are the tty's udev properties, because that is where labgrid's plain
    match keys look; `id_path` is the USB *device's* ID_PATH (the physical port, matched with
    `@ID_PATH`), `tty_id_path` the tty's own (which adds the interface, `...:1.0`).
    """

    device_node: str  # /dev/ttyUSB0
    sys_path: str  # the tty in sysfs
    usb_sys_path: str  # the USB device (usb_device) the tty hangs off
    serial_short: str | None = None  # ID_SERIAL_SHORT
    vendor_id: str | None = None  # ID_VENDOR_ID
    model_id: str | None = None  # ID_MODEL_ID
    vendor: str | None = None  # ID_VENDOR
    model: str | None = None  # ID_MODEL
    id_path: str | None = None  # ID_PATH of the USB device
    tty_id_path: str | None = None  # ID_PATH of the tty
    driver: str | None = None  # ID_USB_DRIVER, else the interface's driver
    interface_num: str | None = None  # ID_USB_INTERFACE_NUM, else bInterfaceNumber
    port_number: str | None = None  # usb-serial port_number (several ports per interface)
    udev_ids: bool = True  # False: no ID_* udev properties at all (systemd-udevd absent)

    @property
    def usb_port(self) -> str:
        """The USB device's kernel name (`1-4.2`): bus 1, hub port 4, port 2 — for humans."""
        return os.path.basename(self.usb_sys_path)


def _prop(device: pyudev.Device, key: str) -> str | None:
    value = device.properties.get(key)
    return value if value else None


def _attr(device: pyudev.Device | None, key: str) -> str | None:
    if device is None:
        return None
    try:
        value = device.attributes.asstring(key).strip()
    except (KeyError, UnicodeDecodeError):
        return None
    return value or None


def _adapter(tty: pyudev.Device, usb: pyudev.Device) -> Adapter:
    interface = tty.find_parent("usb", "usb_interface")
    port = tty.find_parent("usb-serial")
    udev_ids = any(key.startswith("ID_") for key in tty.properties)
    # Without udev the tty carries no ID_* at all; sysfs still knows the serial and the ids,
    # which is worth showing (it tells the user the adapter is there) but never matching on.
    return Adapter(
        device_node=tty.device_node,
        sys_path=tty.sys_path,
        usb_sys_path=usb.sys_path,
        serial_short=_prop(tty, "ID_SERIAL_SHORT") if udev_ids else _attr(usb, "serial"),
        vendor_id=_prop(tty, "ID_VENDOR_ID") if udev_ids else _attr(usb, "idVendor"),
        model_id=_prop(tty, "ID_MODEL_ID") if udev_ids else _attr(usb, "idProduct"),
        vendor=_prop(tty, "ID_VENDOR") if udev_ids else _attr(usb, "manufacturer"),
        model=_prop(tty, "ID_MODEL") if udev_ids else _attr(usb, "product"),
        id_path=_prop(usb, "ID_PATH"),
        tty_id_path=_prop(tty, "ID_PATH"),
        driver=_prop(tty, "ID_USB_DRIVER") or (interface.driver if interface is not None else None),
        interface_num=_prop(tty, "ID_USB_INTERFACE_NUM") or _attr(interface, "bInterfaceNumber"),
        port_number=_attr(port, "port_number"),
        udev_ids=udev_ids,
    )


def _natural(text: str) -> list[object]:
    """Sort key putting ttyUSB2 before ttyUSB10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _scan(context: pyudev.Context) -> tuple[list[Adapter], int]:
    """The adapters, and how many tty devices were looked at (for the nothing-found message)."""
    adapters = []
    ttys = 0
    for tty in context.list_devices(subsystem="tty"):
        ttys += 1
        usb = tty.find_parent("usb", "usb_device")
        if usb is None or not tty.device_node:
            continue
        adapters.append(_adapter(tty, usb))
    adapters.sort(key=lambda a: _natural(a.device_node))
    return adapters, ttys


def _context() -> pyudev.Context:
    try:
        return pyudev.Context()
    except (ImportError, OSError) as e:
        raise SetupError(f"{PROG}: cannot use libudev ({e}) — fix: apt-get install libudev1") from e


def serial_adapters(context: pyudev.Context | None = None) -> list[Adapter]:
    """Every tty below a USB device that has a device node, in device-node order.

    Pure apart from reading udev through `context` (default: the system's), so tests can run it
    against a fake udev database (umockdev) without any hardware.
    """
    return _scan(context if context is not None else _context())[0]


def match_for(adapter: Adapter, among: Sequence[Adapter] = ()) -> tuple[dict[str, str], str]:
    """The labgrid `match:` dict for `adapter`, and why those keys were chosen.

    `among` is every adapter on the host (it may include `adapter`): whether a serial number
    identifies one adapter depends on the others. Raises SetupError when udev offers nothing
    that can identify the adapter, rather than printing a match that finds nothing or two.
    """
    where = f"{adapter.device_node} ({adapter.sys_path})"
    if not adapter.udev_ids:
        raise SetupError(
            f"{where} has no udev ID_* properties: systemd-udevd has not processed it (is it "
            "running? pyudev sees no ID_* properties without it), and labgrid's USBSerialPort "
            "matches on them — fix: run this on the lab host with systemd-udevd running, "
            "or `udevadm trigger --subsystem-match=tty` after starting it"
        )
    others = [a for a in among if a.sys_path != adapter.sys_path]
    same_device = [a for a in others if a.usb_sys_path == adapter.usb_sys_path]
    if same_device and adapter.interface_num is None:
        raise SetupError(
            f"{where} is one of several ports of USB device {adapter.usb_port} but udev gives "
            "it no ID_USB_INTERFACE_NUM — fix: check `udevadm info " + adapter.device_node + "`"
        )
    if any(a.interface_num == adapter.interface_num for a in same_device):
        raise SetupError(
            f"{where} shares USB interface {adapter.interface_num} with another port of the same "
            f"USB device ({adapter.usb_port}): udev's ID_* properties cannot tell those ports "
            "apart — fix: match the usb-serial port by hand, e.g. add "
            f"'@port_number': '{adapter.port_number}' to the match"
        )
    multi_port = bool(same_device)
    interface = {"ID_USB_INTERFACE_NUM": adapter.interface_num} if multi_port else {}
    port_note = f", interface {adapter.interface_num}" if multi_port else ""

    serial = adapter.serial_short
    clash = [a for a in others if serial and a.serial_short == serial and a not in same_device]
    if serial and not clash:
        return {"ID_SERIAL_SHORT": serial, **interface}, (
            f"serial number{port_note}: follows the adapter to any USB port"
        )
    if serial:
        why = f"serial {serial} is also reported by {', '.join(a.device_node for a in clash)}"
    else:
        why = "the adapter reports no serial number"
    if adapter.id_path:
        return {"@ID_PATH": adapter.id_path, **interface}, (
            f"physical USB port{port_note} ({why}): keep it plugged into this port"
        )
    if adapter.tty_id_path:  # the tty's own ID_PATH already names the interface
        return {"ID_PATH": adapter.tty_id_path}, (
            f"physical USB port and interface ({why}): keep it plugged into this port"
        )
    raise SetupError(
        f"{where}: {why}, and udev gives neither it nor its USB device an ID_PATH — "
        f"nothing identifies it — fix: check `udevadm info {adapter.device_node}`"
    )


def _default_name(adapter: Adapter, match: dict[str, str]) -> str:
    if "ID_SERIAL_SHORT" in match:
        name = f"serial-{match['ID_SERIAL_SHORT']}"
    else:
        name = f"usb-{adapter.usb_port}"
    if "ID_USB_INTERFACE_NUM" in match:
        name += f"-if{match['ID_USB_INTERFACE_NUM']}"
    return name


def _describe(adapter: Adapter) -> str:
    ids = f"{adapter.vendor_id or '????'}:{adapter.model_id or '????'}"
    names = " ".join(n for n in (adapter.vendor, adapter.model) if n)
    return f"{names} ({ids})" if names else ids


def labgrid_snippet(
    adapter: Adapter, name: str | None = None, among: Sequence[Adapter] = ()
) -> str:
    """One labgrid resource, as a YAML list item to paste under a target's `resources:`.

    The list form (`- USBSerialPort: {name: ...}`) is the one that lets a target hold several
    USBSerialPort resources; `name` defaults to one derived from the match (`serial-A50285BI`,
    `usb-1-4.2`). A comment above the item says which adapter it is and why the keys were
    chosen, because the next person to edit the lab file needs exactly that.
    """
    match, why = match_for(adapter, among)
    item = [{"USBSerialPort": {"name": name or _default_name(adapter, match), "match": match}}]
    comment = f"# {_describe(adapter)}, now {adapter.device_node}; matched by {why}\n"
    return comment + yaml.safe_dump(item, sort_keys=False, default_flow_style=False)


def resources_block(adapters: Sequence[Adapter]) -> tuple[str, list[str]]:
    """A whole `resources:` block for every adapter that can be matched, and the problems of
    the ones that cannot (so one adapter without udev data does not hide the others)."""
    items, problems = [], []
    for adapter in adapters:
        # Default names are unique within one host: each names the serial (unique, or the
        # match falls back to the port) or the USB port, plus the interface on multi-port chips.
        try:
            snippet = labgrid_snippet(adapter, among=adapters)
        except VfioPlatformError as e:
            problems.append(str(e))
            continue
        items.append("".join(f"  {line}\n" for line in snippet.splitlines()))
    return ("resources:\n" + "".join(items) if items else ""), problems


def _human(adapters: Sequence[Adapter]) -> str:
    out = []
    for a in adapters:
        head = f"{a.device_node}  {_describe(a)}"
        if a.driver:
            head += f"  driver {a.driver}"
        if a.interface_num is not None:
            head += f"  interface {a.interface_num}"
        out.append(head)
        out.append(f"  serial   {a.serial_short or '(none)'}")
        port = a.id_path or a.tty_id_path or "(no ID_PATH)"
        out.append(f"  port     {port}  (USB device {a.usb_port})")
        out.append(f"  sysfs    {a.sys_path}")
        try:
            snippet = labgrid_snippet(a, among=adapters)
        except VfioPlatformError as e:
            out.append(f"  labgrid: no match possible: {e}")
        else:
            out.append("  labgrid:")
            out.extend(f"    {line}" for line in snippet.splitlines())
        out.append("")
    n = len(adapters)
    out.append(
        f"{n} USB serial adapter{'s' if n != 1 else ''}; "
        f"`{PROG} --yaml` prints them as one resources: block for a lab or environment file."
    )
    return "\n".join(out) + "\n"


def _nothing_found(ttys: int) -> str:
    udevd = (
        f"systemd-udevd is running ({UDEVD_CONTROL} exists)"
        if os.path.exists(UDEVD_CONTROL)
        else f"systemd-udevd is NOT running ({UDEVD_CONTROL} absent): without it pyudev sees "
        "no ID_* properties, so even a plugged-in adapter could not be matched by labgrid"
    )
    return (
        f"{PROG}: no USB serial adapters found.\n"
        f"  looked at: the {ttys} tty device{'s' if ttys != 1 else ''} libudev lists "
        "(subsystem tty, /sys/class/tty); none has a USB device as a parent and a device node\n"
        f"  udev: {udevd}\n"
        "  fix: plug the adapter in and check `dmesg | grep -i tty` (a missing driver shows "
        "there); in a container, pass the host's /sys, /dev and /run/udev through\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vfio-lab-serial`; returns the exit status (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="List USB serial adapters with their udev properties and print the labgrid "
        "USBSerialPort match that finds each one again.",
        epilog="Exit status: 0 adapters listed, 1 none found (nothing is printed on stdout), "
        "2 usage error or libudev unusable. Needs systemd-udevd: labgrid matches on the ID_* "
        "properties it sets.",
    )
    parser.add_argument(
        "--yaml",
        action="store_true",
        help="print only a `resources:` block (every adapter as a named USBSerialPort) to paste "
        "into a target of a lab or labgrid environment file",
    )
    args = parser.parse_args(argv)
    try:
        adapters, ttys = _scan(_context())
    except VfioPlatformError as e:
        print(e, file=sys.stderr)
        return 2
    if not adapters:
        sys.stderr.write(_nothing_found(ttys))
        return 1
    if not args.yaml:
        sys.stdout.write(_human(adapters))
        return 0
    block, problems = resources_block(adapters)
    for problem in problems:
        print(f"{PROG}: skipped: {problem}", file=sys.stderr)
    if not block:
        print(f"{PROG}: no adapter can be matched; nothing to print", file=sys.stderr)
        return 1
    sys.stdout.write(block)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
