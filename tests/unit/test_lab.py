"""Lab files: the shipped labs load; broken ones name the file, the key and what was expected."""

import textwrap

import pytest

from pytest_vfio_platform.errors import LabError
from pytest_vfio_platform.lab import LABS_DIR, available_labs, load


def test_qemu_lab_loads_with_inventory():
    lab = load("qemu")
    assert {d.name for d in lab.devices} == {"uart0", "gpio", "rtc"}
    assert {d.bus for d in lab.devices} == {"platform", "amba"}
    uart = lab.device("uart0")
    assert (uart.mmio_base, uart.mmio_size, uart.irq_spi) == (0x9000000, 0x1000, 1)
    assert uart.id_registers["periphid"] == (0xFE0, 0x00141011)
    assert "default" in lab.variants and "noiommu" in lab.variants
    # the change under test on both buses by default; the baseline on the generic drivers
    assert lab.variants["default"].vfio_driver == {
        "platform": "vfio-platform-nodma",
        "amba": "vfio-platform-nodma",
    }
    assert lab.variants["noiommu"].vfio_driver == {"platform": "vfio-platform", "amba": "vfio-amba"}
    # every assignable device says what its next owner must find after a reset
    assert all(d.reset and d.reset.expect for d in lab.devices)
    # every variant carries the base DT edits
    for v in lab.variants.values():
        assert any(e.node == "/pl061@9030000" for e in v.dtb)


def test_unknown_lab_lists_available():
    with pytest.raises(LabError) as e:
        load("nosuchlab")
    assert "unknown lab" in str(e.value) and "qemu" in str(e.value)
    assert "qemu" in available_labs()


def _write(tmp_path, text):
    p = tmp_path / "lab.yaml"
    p.write_text(textwrap.dedent(text))
    return p


BASE = (LABS_DIR / "qemu.yaml").read_text()


def test_yaml_syntax_error_names_line(tmp_path):
    p = _write(tmp_path, "name: x\nboard: [unclosed\n")
    with pytest.raises(LabError, match=r"lab.yaml: line \d+, column \d+: not valid YAML"):
        load(str(p))


def test_wrong_type_names_key(tmp_path):
    p = _write(tmp_path, BASE.replace("base: 0x9030000", "base: nine"))
    with pytest.raises(
        LabError, match=r"devices\[1\]\.mmio\.base: expected an integer, got 'nine'"
    ):
        load(str(p))


def test_unknown_key_is_rejected(tmp_path):
    p = _write(
        tmp_path, BASE.replace("    class: gpio\n", "    class: gpio\n    colour: blue\n", 1)
    )
    with pytest.raises(LabError, match=r"devices\[1\]\.colour: unknown key"):
        load(str(p))


def test_missing_key(tmp_path):
    p = _write(
        tmp_path,
        BASE.replace(
            "    sysfs: 9030000.pl061\n    bus: platform\n    compatible",
            "    bus: platform\n    compatible",
            1,
        ),
    )
    with pytest.raises(LabError, match=r"devices\[1\]\.sysfs: missing \(required\)"):
        load(str(p))


def test_bad_choice(tmp_path):
    p = _write(tmp_path, BASE.replace("bus: amba", "bus: pci", 1))
    with pytest.raises(
        LabError, match=r"devices\[2\]\.bus: expected one of platform, amba, got 'pci'"
    ):
        load(str(p))


def test_unknown_variant_reference(tmp_path):
    p = _write(tmp_path, BASE.replace("variant: dma-a,", "variant: dma-nope,", 1))
    with pytest.raises(LabError, match=r"refused\[3\]\.variant: unknown variant 'dma-nope'"):
        load(str(p))


def test_unknown_socket(tmp_path):
    p = _write(tmp_path, BASE.replace("socket: uart0", "socket: uart9"))
    with pytest.raises(
        LabError, match=r"stimulus\.socket: 'uart9' is not one of board\.uart_sockets"
    ):
        load(str(p))


def test_not_a_mapping(tmp_path):
    p = _write(tmp_path, "- just\n- a list\n")
    with pytest.raises(LabError, match="expected a mapping"):
        load(str(p))


def test_missing_file(tmp_path):
    with pytest.raises(LabError, match="no such file"):
        load(str(tmp_path / "none.yaml"))


def test_local_rack_inherits_the_qemu_board_and_inventory():
    lab, qemu = load("local-rack"), load("qemu")
    assert lab.board_type == "rack" and lab.name == "local-rack"
    assert [d.name for d in lab.devices] == [d.name for d in qemu.devices]
    assert lab.machine_args == qemu.machine_args and lab.variants.keys() == qemu.variants.keys()
    assert lab.rack is not None and lab.rack.local_boards == 2
    assert lab.rack.tags == {"rack": "local", "board": "qemu-virt"}


def test_coordinator_from_environment_wins(monkeypatch):
    monkeypatch.setenv("LG_COORDINATOR", "10.0.0.5:20408")
    assert load("local-rack").rack.coordinator == "10.0.0.5:20408"


@pytest.mark.parametrize(
    "rack, msg",
    [
        ("tags: {Rack: x}", "tag name 'Rack'"),
        ("tags: {rack: 'a b'}", "rack.tags.rack"),
        ("boot: tftp", "rack.boot: expected one of fastboot-net, fastboot-usb"),
        ("coordinator: nowhere", "rack.coordinator: expected HOST:PORT"),
        ("bootimg_header: 1", "rack.bootimg_header"),
        ("placess: 2", "rack.placess: unknown key"),
    ],
)
def test_bad_rack_section_names_the_key(tmp_path, monkeypatch, rack, msg):
    monkeypatch.delenv("LG_COORDINATOR", raising=False)
    p = _write(tmp_path, f"name: r\ninherit: qemu\nboard: {{type: rack}}\nrack: {{{rack}}}\n")
    with pytest.raises(LabError) as e:
        load(str(p))
    assert str(p) in str(e.value) and msg in str(e.value)


def test_rack_board_without_rack_section(tmp_path):
    p = _write(tmp_path, "name: r\ninherit: qemu\nboard: {type: rack}\n")
    with pytest.raises(LabError, match="needs a rack section"):
        load(str(p))


def test_inherit_unknown_or_looping(tmp_path):
    p = _write(tmp_path, "name: r\ninherit: nosuch\n")
    with pytest.raises(LabError, match="inherit: --lab nosuch: unknown lab"):
        load(str(p))
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"name: a\ninherit: {b}\n")
    b.write_text(f"name: b\ninherit: {a}\n")
    with pytest.raises(LabError, match="inheritance loop"):
        load(str(a))


def test_place_option_by_name_or_tags():
    from pytest_vfio_platform.lab import with_place

    lab = load("local-rack")
    assert with_place(lab, "board-2").rack.tags == {"name": "board-2"}
    assert with_place(lab, "soc=gs101,board=pixel6").rack.tags == {
        "soc": "gs101",
        "board": "pixel6",
    }
    for bad in ("", "Board", "soc=a b", "=x"):
        with pytest.raises(LabError, match="--place"):
            with_place(lab, bad)
    with pytest.raises(LabError, match="not a rack"):
        with_place(load("qemu"), "board-1")


# A lab file runs as root: names that reach a shell, a QEMU command line or DT source built
# on the board must have the shape of what they name (shared-host safety).
HOSTILE = [
    ("devices[0].sysfs", "9000000.pl011; reboot", "a sysfs device name"),
    ("devices[0].sysfs", "9000000.pl011,x-opt=1", "a sysfs device name"),
    ("devices[0].compatible", 'arm,pl011"; evil', "a compatible like arm,pl011"),
    ("devices[0].name", "uart$(id)", "a name of letters"),
    ("devices[0].host_driver", "pl011 && rm", "a driver name"),
    ("board.uart_sockets[0]", "../../etc/x", "a name of letters"),
    ("board.dtb[0].node", "/pl061@9030000 { }; /x", "an absolute DT path"),
]


def _with(text: str, key: str, value: str) -> str:
    import yaml

    data = yaml.safe_load(text)
    cur = data
    parts = key.replace("]", "").replace("[", ".").split(".")
    for p in parts[:-1]:
        cur = cur[int(p)] if p.isdigit() else cur[p]
    last = parts[-1]
    if last.isdigit():
        cur[int(last)] = value
    else:
        cur[last] = value
    return yaml.safe_dump(data)


@pytest.mark.parametrize("key, value, want", HOSTILE, ids=[h[0] + "=" + h[1] for h in HOSTILE])
def test_names_that_reach_a_shell_must_have_their_shape(tmp_path, key, value, want):
    text = (LABS_DIR / "qemu.yaml").read_text()
    p = tmp_path / "lab.yaml"
    p.write_text(_with(text, key, value))
    with pytest.raises(LabError) as e:
        load(str(p))
    assert key in str(e.value) and want in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "dts, want",
    [
        ('/incbin/("/etc/shadow");', "/incbin/ is not allowed"),
        ('/include/ "/root/.ssh/id_rsa"', "/include/ is not allowed"),
        ("x {};\nVFIO_EOF\nreboot -f\n", "would end the DT source"),
    ],
)
def test_raw_dts_cannot_read_host_files_or_end_the_heredoc(tmp_path, dts, want):
    import yaml

    data = yaml.safe_load((LABS_DIR / "qemu.yaml").read_text())
    data["board"]["dtb"].append({"node": "/", "dts": dts})
    p = tmp_path / "lab.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(LabError, match=want):
        load(str(p))


def test_a_device_class_guest_dt_is_inventory_yaml_only(tmp_path):
    """A new kind of device gets its L2 guest node from its guest_dt and its ID registers,
    in both VMM backends: no Python table."""
    import dataclasses

    import yaml

    from pytest_vfio_platform.guest import slots
    from pytest_vfio_platform.guest.crosvm import vm_dt_overlay
    from pytest_vfio_platform.guest.qemu import device_node

    data = yaml.safe_load((LABS_DIR / "qemu.yaml").read_text())
    timer = dict(data["devices"][0], name="timer0", sysfs="9080000.sp804")
    timer.update(compatible="arm,sp804", **{"class": "timer"})
    timer["guest_dt"] = {"clock-names": ["timer1", "timer2", "apb_pclk"], "arm,sp804-has-irq": 1}
    data["devices"].append(timer)
    p = tmp_path / "lab.yaml"
    p.write_text(yaml.safe_dump(data))
    dev = dataclasses.replace(load(str(p)).device("timer0"), bus="platform")
    node = device_node(slots([dev])[0])
    assert 'clock-names = "timer1", "timer2", "apb_pclk";' in node
    assert "clocks = <&{/apb-pclk} &{/apb-pclk} &{/apb-pclk}>;" in node
    assert "arm,sp804-has-irq = <0x1>;" in node
    gpio = device_node(slots([load("qemu").device("gpio")])[0])
    assert "gpio-controller;" in gpio and "#gpio-cells = <0x2>;" in gpio
    # the crosvm backend reads the same inventory: its VM DTBO node carries the same
    overlay = vm_dt_overlay([dev])
    assert 'compatible = "arm,sp804", "arm,primecell";' in overlay
    assert 'clock-names = "timer1", "timer2", "apb_pclk";' in overlay
    assert "arm,sp804-has-irq = <0x1>;" in overlay
    # not a PrimeCell (no B105F00D component ID): no "arm,primecell", no clocks, in both
    plain = dataclasses.replace(dev, id_registers={}, guest_dt={})
    for text in (device_node(slots([plain])[0]), vm_dt_overlay([plain])):
        assert "arm,primecell" not in text and "clocks" not in text, text
    data["devices"][-1]["guest_dt"] = {"reg": [0, 4096]}
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(LabError, match=r"guest_dt.reg: set from the device's placement"):
        load(str(p))
