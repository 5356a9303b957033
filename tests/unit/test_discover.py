"""`vfio-lab-serial`: the match each adapter gets, and proof that labgrid finds exactly that
adapter with it.

The machine has no USB serial adapters and no udevd, so the command runs under `umockdev-run`
against FAKE udev databases written by hand (tests/fixtures/udev/*.umockdev): umockdev
LD_PRELOADs a fake /sys, /dev and udev database, so the real libudev -> pyudev -> labgrid path
runs unchanged. The labgrid check loads the printed `resources:` block into a labgrid
Environment in a child process under the same fake, and asks labgrid's own USBSerialPort
matching which ttys each resource accepts: exactly one, the intended one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pytest_vfio_platform.discover import Adapter, labgrid_snippet, match_for, resources_block
from pytest_vfio_platform.errors import SetupError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "udev"
UMOCKDEV_RUN = shutil.which("umockdev-run")
COMMAND = Path(sys.executable).with_name("vfio-lab-serial")
# The four adapters of the brief: FT232R, dual-port FT2232H, Pixel CDC-ACM, CH340 without serial.
LAB = ["ftdi-ft232r", "ftdi-ft2232h", "pixel-cdc-acm", "ch340-no-serial"]

needs_umockdev = pytest.mark.skipif(
    UMOCKDEV_RUN is None,
    reason="umockdev-run not installed (apt-get install umockdev; ci/setup installs it): "
    "the fake udev database these tests run against needs it",
)

# Run under umockdev-run: build the labgrid Environment from the YAML file argv[1], then for
# every USBSerialPort report what labgrid made of it (avail, port) and every tty that
# labgrid's own USBResource.try_match accepts for its match (`hits`).
LABGRID_CHECK = textwrap.dedent(
    """
    import json, sys
    import pyudev
    from labgrid import Environment
    from labgrid.resource.udev import USBSerialPort

    target = Environment(sys.argv[1]).get_target("main")
    ttys = list(pyudev.Context().list_devices(subsystem="tty"))
    out = {}
    for res in target.resources:
        if not isinstance(res, USBSerialPort):
            continue
        out[res.name] = {"avail": res.avail, "port": res.port}
        hits = []
        for dev in ttys:
            res.device, res.avail = None, False
            if res.try_match(dev):
                hits.append(dev.device_node)
        out[res.name]["hits"] = hits
    print(json.dumps(out))
    """
)


def _devices(tmp_path: Path, names: list[str]) -> list[str]:
    """`--device` arguments for the host controller plus `names`.

    umockdev 0.17's parser rejects comment lines (a file must start with `P:`), so the
    fixtures' header comments are stripped into copies under tmp_path.
    """
    args = []
    for name in ["usb-host", *names]:
        text = (FIXTURES / f"{name}.umockdev").read_text()
        body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        copy = tmp_path / f"{name}.umockdev"
        copy.write_text(body.lstrip("\n") + "\n")
        args += ["--device", str(copy)]
    return args


def _umockdev(tmp_path: Path, names: list[str], *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [UMOCKDEV_RUN, *_devices(tmp_path, names), "--", *cmd],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _command(tmp_path: Path, names: list[str], *args: str) -> subprocess.CompletedProcess:
    assert COMMAND.exists(), f"{COMMAND} missing: run .venv/bin/pip install -e . to register it"
    return _umockdev(tmp_path, names, str(COMMAND), *args)


def _labgrid_sees(tmp_path: Path, names: list[str], resources_yaml: str) -> dict:
    """Paste `resources_yaml` (a `resources:` block) into a target and ask labgrid."""
    env = "targets:\n  main:\n" + textwrap.indent(resources_yaml, "    ")
    (tmp_path / "env.yaml").write_text(env)
    r = _umockdev(tmp_path, names, sys.executable, "-c", LABGRID_CHECK, str(tmp_path / "env.yaml"))
    assert r.returncode == 0, f"labgrid check failed:\n{env}\n{r.stderr}"
    return json.loads(r.stdout.splitlines()[-1])


# --- the command under umockdev ------------------------------------------------------------


@needs_umockdev
def test_human_output_lists_each_adapter_with_its_udev_properties(tmp_path):
    r = _command(tmp_path, LAB)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    blocks = {b.split()[0]: b for b in out.split("\n\n") if b.startswith("/dev/")}
    assert sorted(blocks) == [
        "/dev/ttyACM0",
        "/dev/ttyUSB0",
        "/dev/ttyUSB1",
        "/dev/ttyUSB2",
        "/dev/ttyUSB3",
    ]
    ft232r = blocks["/dev/ttyUSB0"]
    assert "FTDI FT232R_USB_UART (0403:6001)" in ft232r and "driver ftdi_sio" in ft232r
    assert "serial   A50285BI" in ft232r and "pci-0000:00:14.0-usb-0:2 " in ft232r
    assert "ID_SERIAL_SHORT: A50285BI" in ft232r
    assert "interface 01" in blocks["/dev/ttyUSB2"]
    assert "ID_USB_INTERFACE_NUM: '01'" in blocks["/dev/ttyUSB2"]
    pixel = blocks["/dev/ttyACM0"]
    assert "(18d1:4eec)" in pixel and "driver cdc_acm" in pixel
    assert "ID_SERIAL_SHORT: 35121FDH2000K7" in pixel
    ch340 = blocks["/dev/ttyUSB3"]
    assert "serial   (none)" in ch340 and "driver ch341" in ch340
    assert "'@ID_PATH': pci-0000:00:14.0-usb-0:4.2" in ch340
    assert "reports no serial number" in ch340
    assert out.rstrip().endswith(
        "`vfio-lab-serial --yaml` prints them as one resources: block for a lab or environment file."
    )
    assert r.stderr == ""


@needs_umockdev
def test_yaml_block_makes_labgrid_match_exactly_the_intended_port(tmp_path):
    r = _command(tmp_path, LAB, "--yaml")
    assert r.returncode == 0, r.stderr
    block = yaml.safe_load(r.stdout)
    matches = {
        next(iter(i.values()))["name"]: next(iter(i.values()))["match"] for i in block["resources"]
    }
    assert matches == {
        "serial-35121FDH2000K7": {"ID_SERIAL_SHORT": "35121FDH2000K7"},
        "serial-A50285BI": {"ID_SERIAL_SHORT": "A50285BI"},
        "serial-FT2H7QX9-if00": {"ID_SERIAL_SHORT": "FT2H7QX9", "ID_USB_INTERFACE_NUM": "00"},
        "serial-FT2H7QX9-if01": {"ID_SERIAL_SHORT": "FT2H7QX9", "ID_USB_INTERFACE_NUM": "01"},
        "usb-1-4.2": {"@ID_PATH": "pci-0000:00:14.0-usb-0:4.2"},
    }
    seen = _labgrid_sees(tmp_path, LAB, r.stdout)
    want = {
        "serial-35121FDH2000K7": "/dev/ttyACM0",
        "serial-A50285BI": "/dev/ttyUSB0",
        "serial-FT2H7QX9-if00": "/dev/ttyUSB1",
        "serial-FT2H7QX9-if01": "/dev/ttyUSB2",
        "usb-1-4.2": "/dev/ttyUSB3",
    }
    assert {name: s["port"] for name, s in seen.items()} == want
    for name, s in seen.items():
        assert s["avail"] is True, name
        assert s["hits"] == [want[name]], f"{name} matches {s['hits']}, not only {want[name]}"


@needs_umockdev
def test_serial_shared_by_two_devices_falls_back_to_physical_port(tmp_path):
    """A second FT232R with the clone serial A50285BI: the serial now names two devices."""
    names = [*LAB, "ftdi-ft232r-clone"]
    r = _command(tmp_path, names, "--yaml")
    assert r.returncode == 0, r.stderr
    assert "serial A50285BI is also reported by /dev/ttyUSB4" in r.stdout
    # Negative controls beside the printed block: the matches a human would write first.
    # They show the check can see ambiguity, so its "exactly one" above is not vacuous.
    naive = (
        "  - USBSerialPort:\n"
        "      name: naive-clone-serial\n"
        "      match: {ID_SERIAL_SHORT: A50285BI}\n"
        "  - USBSerialPort:\n"
        "      name: naive-ft2232h-serial\n"
        "      match: {ID_SERIAL_SHORT: FT2H7QX9}\n"
    )
    seen = _labgrid_sees(tmp_path, names, r.stdout + naive)
    assert seen["usb-1-2"]["hits"] == ["/dev/ttyUSB0"]
    assert seen["usb-1-4.3"]["hits"] == ["/dev/ttyUSB4"]
    assert seen["usb-1-2"]["port"] == "/dev/ttyUSB0" and seen["usb-1-4.3"]["port"] == "/dev/ttyUSB4"
    assert sorted(seen["naive-clone-serial"]["hits"]) == ["/dev/ttyUSB0", "/dev/ttyUSB4"]
    assert sorted(seen["naive-ft2232h-serial"]["hits"]) == ["/dev/ttyUSB1", "/dev/ttyUSB2"]
    for name in ("serial-FT2H7QX9-if00", "serial-FT2H7QX9-if01", "usb-1-4.2"):
        assert len(seen[name]["hits"]) == 1, name


@needs_umockdev
def test_no_adapters_says_what_was_looked_at_and_exits_1(tmp_path):
    r = _command(tmp_path, [])  # the USB host controller and hub only
    assert r.returncode == 1
    assert r.stdout == ""  # `vfio-lab-serial --yaml > lab.yaml` must not write an empty block
    assert "no USB serial adapters found" in r.stderr
    assert "looked at: the 0 tty devices libudev lists" in r.stderr
    assert "systemd-udevd is NOT running" in r.stderr and "no ID_* properties" in r.stderr
    r = _command(tmp_path, [], "--yaml")
    assert r.returncode == 1 and r.stdout == ""


@needs_umockdev
def test_adapter_without_udev_properties_is_shown_but_never_matched(tmp_path):
    """What a host without systemd-udevd looks like: sysfs knows the adapter, udev says nothing."""
    text = (FIXTURES / "ftdi-ft232r.umockdev").read_text()
    bare = tmp_path / "bare" / "ftdi-ft232r-no-udev.umockdev"
    bare.parent.mkdir()
    keep = [ln for ln in text.splitlines() if not ln.startswith(("#", "E: ID_"))]
    bare.write_text("\n".join(keep).lstrip("\n") + "\n")
    args = [UMOCKDEV_RUN, *_devices(tmp_path, []), "--device", str(bare)]
    r = subprocess.run([*args, "--", str(COMMAND)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "/dev/ttyUSB0  FTDI FT232R USB UART (0403:6001)" in r.stdout  # from sysfs attributes
    assert "serial   A50285BI" in r.stdout
    assert "labgrid: no match possible" in r.stdout and "systemd-udevd" in r.stdout
    r = subprocess.run(
        [*args, "--", str(COMMAND), "--yaml"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1 and r.stdout == ""
    assert "skipped: /dev/ttyUSB0" in r.stderr and "no udev ID_* properties" in r.stderr


# --- the match choice, in-process ------------------------------------------------------------


def _adapter(n: int, **kw) -> Adapter:
    usb = kw.pop("usb", f"/sys/devices/pci0000:00/0000:00:14.0/usb1/1-{n}")
    iface = kw.get("interface_num", "00")
    defaults = dict(
        device_node=f"/dev/ttyUSB{n}",
        sys_path=f"{usb}/{usb.rsplit('/', 1)[1]}:1.{int(iface)}/ttyUSB{n}/tty/ttyUSB{n}",
        usb_sys_path=usb,
        vendor_id="0403",
        model_id="6001",
        vendor="FTDI",
        model="FT232R_USB_UART",
        id_path=f"pci-0000:00:14.0-usb-0:{usb.rsplit('-', 1)[1]}",
        tty_id_path=f"pci-0000:00:14.0-usb-0:{usb.rsplit('-', 1)[1]}:1.{int(iface)}",
        driver="ftdi_sio",
        interface_num="00",
    )
    return Adapter(**{**defaults, **kw})


def _item(snippet: str) -> dict:
    (item,) = yaml.safe_load(snippet)
    return item["USBSerialPort"]


def test_serial_number_preferred():
    a = _adapter(0, serial_short="A50285BI")
    snippet = labgrid_snippet(a)
    assert snippet.startswith("# FTDI FT232R_USB_UART (0403:6001), now /dev/ttyUSB0; matched by ")
    assert _item(snippet) == {"name": "serial-A50285BI", "match": {"ID_SERIAL_SHORT": "A50285BI"}}
    # other adapters with other serials change nothing
    assert _item(labgrid_snippet(a, among=[a, _adapter(1, serial_short="X")]))["match"] == {
        "ID_SERIAL_SHORT": "A50285BI"
    }


def test_no_serial_falls_back_to_usb_device_path():
    a = _adapter(3, serial_short=None, usb="/sys/devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4.2")
    assert _item(labgrid_snippet(a)) == {
        "name": "usb-1-4.2",
        "match": {"@ID_PATH": "pci-0000:00:14.0-usb-0:4.2"},
    }


def test_multi_port_chip_adds_interface_number():
    usb = "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-3"
    p0 = _adapter(1, serial_short="FT2H7QX9", usb=usb, interface_num="00")
    p1 = _adapter(2, serial_short="FT2H7QX9", usb=usb, interface_num="01")
    assert _item(labgrid_snippet(p1, among=[p0, p1])) == {
        "name": "serial-FT2H7QX9-if01",
        "match": {"ID_SERIAL_SHORT": "FT2H7QX9", "ID_USB_INTERFACE_NUM": "01"},
    }
    # ...and without a serial, the port plus the interface
    q0, q1 = (a.__class__(**{**a.__dict__, "serial_short": None}) for a in (p0, p1))
    assert _item(labgrid_snippet(q0, among=[q0, q1]))["match"] == {
        "@ID_PATH": "pci-0000:00:14.0-usb-0:3",
        "ID_USB_INTERFACE_NUM": "00",
    }


def test_serial_shared_across_usb_devices_uses_the_port():
    a = _adapter(0, serial_short="A50285BI")
    b = _adapter(
        4, serial_short="A50285BI", usb="/sys/devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4.3"
    )
    match, why = match_for(a, [a, b])
    assert match == {"@ID_PATH": "pci-0000:00:14.0-usb-0:0"}
    assert "also reported by /dev/ttyUSB4" in why
    assert match_for(b, [a, b])[0] == {"@ID_PATH": "pci-0000:00:14.0-usb-0:4.3"}


def test_usb_device_without_id_path_uses_the_ttys_own():
    a = _adapter(3, serial_short=None, id_path=None)
    assert match_for(a)[0] == {"ID_PATH": "pci-0000:00:14.0-usb-0:3:1.0"}
    with pytest.raises(SetupError, match="nothing identifies it"):
        match_for(_adapter(3, serial_short=None, id_path=None, tty_id_path=None))


def test_names_and_values_stay_strings_in_yaml():
    a = _adapter(0, serial_short="0001234")
    item = _item(labgrid_snippet(a, name="pixel-7-console"))
    assert item == {"name": "pixel-7-console", "match": {"ID_SERIAL_SHORT": "0001234"}}


def test_no_udev_properties_refuses_to_print_a_match():
    a = _adapter(0, serial_short="A50285BI", udev_ids=False)
    with pytest.raises(SetupError, match="systemd-udevd"):
        labgrid_snippet(a)
    block, problems = resources_block([a, _adapter(1, serial_short="B")])
    assert yaml.safe_load(block)["resources"][0]["USBSerialPort"]["name"] == "serial-B"
    assert len(problems) == 1 and "/dev/ttyUSB0" in problems[0]


def test_ports_sharing_one_interface_are_refused():
    """mos7840-style chips: several ttys on one interface, which udev's ID_* cannot separate."""
    usb = "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-5"
    a = _adapter(5, serial_short="S", usb=usb, port_number="0")
    b = _adapter(6, serial_short="S", usb=usb, port_number="1")
    with pytest.raises(SetupError, match="'@port_number': '1'"):
        match_for(b, [a, b])
