"""crosvm backend: the `crosvm run` argv and the VM DTBO, pinned against documented syntax.

Where the expected values come from (guest/crosvm.py's docstring has the full list):
- crosvm src/crosvm/cmdline.rs (google/crosvm; text read in Droid-VM/crosvm):
  `--vfio PATH[,guest-address=..][,iommu=viommu|coiommu|pkvm-iommu|off][,dt-symbol=SYMBOL]`,
  `--device-tree-overlay PATH[,filter]`, `--serial type=unix-stream,..,input-unix-stream`,
  `--no-balloon`, `--no-rng`, `--no-usb`, `--protected-vm`;
  src/crosvm/sys/linux/config.rs: VfioOption keys path, iommu, guest-address, dt-symbol.
- AOSP packages/modules/Virtualization android/virtmgr/src/crosvm.rs (Android 15/16):
  `--vfio=PATH,iommu=pkvm-iommu,dt-symbol=LABEL`, `--device-tree-overlay=DTBO,filter`.
- AOSP docs/device_assignment.md: the VM DTBO (`&{/}` labelled nodes, `/host` with physical
  `reg` and `android,pvmfw,target`, compiled with `dtc -@`).
- crosvm cros_fdt/src/overlay.rs and arch/src/fdt.rs: a dt-symbol must resolve through
  `__symbols__` to `/fragment@N/__overlay__/...` of a fragment with `target-path`; crosvm
  rewrites `reg` as u64 pairs and `interrupts` as `<0 SPI 4|1>`.
- crosvm aarch64/src/lib.rs, docs/book/src/appendix/memory_layout.md: platform MMIO right
  after RAM (0x8000_0000 + --mem), IRQs from AARCH64_IRQ_BASE = 4.
"""

import dataclasses
import re
import subprocess

import pytest

from pytest_vfio_platform.errors import BuildError
from pytest_vfio_platform.guest import crosvm
from pytest_vfio_platform.guest.crosvm import (
    BASE_UNAWARE_CHECKS,
    compile_dtbo,
    crosvm_command,
    dt_symbol,
    placements,
    vm_dt_overlay,
)
from pytest_vfio_platform.lab import Device, Stimulus, load


@pytest.fixture(scope="module")
def qemu_devices() -> list[Device]:
    """The QEMU lab's inventory, every device presented as a platform device (the guest
    variant of that lab does the same for the PL031)."""
    return [dataclasses.replace(d, bus="platform") for d in load("qemu").devices]


def _dev(**kw) -> Device:
    base = dict(
        cls="uart",
        bus="platform",
        id_registers={},
        stimulus=Stimulus(kind="none"),
        irq_trigger="level-high",
    )
    return Device(**{**base, **kw})


# A hand-made pair that exercises what the QEMU inventory does not: an absolute sysfs path,
# a non-PrimeCell compatible (no clocks), a sub-page region (the next one is page aligned),
# a name that is not a DT label, a level-low and an edge IRQ.
TWO = [
    _dev(
        name="uart-a",
        sysfs="/sys/devices/platform/10a00000.serial",
        compatible="snps,dw-apb-uart",
        mmio_base=0x10A00000,
        mmio_size=0x100,
        irq_spi=634,
        irq_trigger="level-low",
    ),
    _dev(
        name="gpio.b",
        cls="gpio",
        sysfs="10b30000.gpio",
        compatible="arm,pl061",
        mmio_base=0x10B30000,
        mmio_size=0x1000,
        irq_spi=77,
        irq_trigger="edge-rising",
        # a PrimeCell by its component ID; its guest node's extra properties are inventory
        id_registers={"cellid": (0xFF0, 0xB105F00D)},
        guest_dt={"gpio-controller": [], "#gpio-cells": 2},
    ),
]
TWO_KW = dict(
    kernel="/data/l2/Image",
    initrd="/data/l2/initramfs.cpio",
    dtbo_path="/data/l2/vm.dtbo",
    params="rdinit=/init quiet",
    mem_mib=512,
    cpus=2,
    protected=True,
    serial_socket="/data/l2/console.sock",
    iommu="off",
    binary="/apex/com.android.virt/bin/crosvm",
)


# --- the command line ---------------------------------------------------------------------


def test_argv_for_the_qemu_lab_inventory(qemu_devices):
    cmd = crosvm_command(
        qemu_devices, kernel="/data/local/tmp/Image", dtbo_path="/data/local/tmp/vm.dtbo"
    )
    assert cmd == [
        "crosvm",
        "run",
        "--disable-sandbox",
        "--mem",
        "256",
        "--cpus",
        "1",
        "--no-balloon",
        "--no-rng",
        "--no-usb",
        "--serial",
        "type=stdout,hardware=serial,num=1,console,stdin",
        "--device-tree-overlay",
        "/data/local/tmp/vm.dtbo,filter",
        "--vfio",
        "/sys/bus/platform/devices/9000000.pl011,iommu=pkvm-iommu,dt-symbol=assigned_uart0",
        "--vfio",
        "/sys/bus/platform/devices/9030000.pl061,iommu=pkvm-iommu,dt-symbol=assigned_gpio",
        "--vfio",
        "/sys/bus/platform/devices/9010000.pl031,iommu=pkvm-iommu,dt-symbol=assigned_rtc",
        "/data/local/tmp/Image",
    ]


def test_argv_for_two_devices_with_every_option():
    assert crosvm_command(TWO, **TWO_KW) == [
        "/apex/com.android.virt/bin/crosvm",
        "run",
        "--disable-sandbox",
        "--mem",
        "512",
        "--cpus",
        "2",
        "--protected-vm",
        "--no-balloon",
        "--no-rng",
        "--no-usb",
        "--serial",
        "type=unix-stream,path=/data/l2/console.sock,input-unix-stream,hardware=serial,num=1,console",
        "--initrd",
        "/data/l2/initramfs.cpio",
        "--params",
        "rdinit=/init quiet",
        "--device-tree-overlay",
        "/data/l2/vm.dtbo,filter",
        "--vfio",
        "/sys/devices/platform/10a00000.serial,iommu=off,dt-symbol=assigned_uart_a",
        "--vfio",
        "/sys/bus/platform/devices/10b30000.gpio,iommu=off,dt-symbol=assigned_gpio_b",
        "/data/l2/Image",
    ]


def _vfio_values(cmd: list[str]) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == "--vfio"]


@pytest.mark.parametrize("which", ["qemu", "two"])
def test_vfio_values_parse_as_crosvm_vfio_option(which, qemu_devices):
    """Each --vfio value as crosvm's key=value parser reads it: the sysfs path first, then
    only keys VfioOption knows, `iommu` one of IommuDevType's names, no `guest-address`
    (a PCI address; crosvm refuses it for platform devices) and a `dt-symbol` always."""
    devices, kw = (qemu_devices, {}) if which == "qemu" else (TWO, TWO_KW)
    kw = {"kernel": "k", "dtbo_path": "d", **kw}
    for value, dev in zip(_vfio_values(crosvm_command(devices, **kw)), devices, strict=True):
        path, *pairs = value.split(",")
        assert path.startswith("/sys/") and path.endswith(dev.sysfs.rsplit("/", 1)[-1])
        opts = dict(p.split("=", 1) for p in pairs)
        assert set(opts) == {"iommu", "dt-symbol"}
        assert opts["iommu"] in ("pkvm-iommu", "viommu", "coiommu", "off")
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,30}", opts["dt-symbol"])


def test_dtbo_is_given_before_the_devices_and_with_filter(qemu_devices):
    cmd = crosvm_command(qemu_devices, kernel="k", dtbo_path="/x/vm.dtbo")
    i = cmd.index("--device-tree-overlay")
    assert cmd[i + 1] == "/x/vm.dtbo,filter"
    assert i < cmd.index("--vfio") and cmd[-1] == "k"


# --- placement (crosvm's allocation, as predicted) ----------------------------------------


def test_placement_follows_crosvm_allocation_rules(qemu_devices):
    ps = placements(qemu_devices)
    assert [(p.symbol, p.guest_base, p.size, p.spi, p.irq_flags) for p in ps] == [
        ("assigned_uart0", 0x9000_0000, 0x1000, 4, 4),
        ("assigned_gpio", 0x9000_1000, 0x1000, 5, 4),
        ("assigned_rtc", 0x9000_2000, 0x1000, 6, 4),
    ]
    # sub-page region rounded to the next page; level-low becomes level-high (4), edge is 1
    ps = placements(TWO, mem_mib=512)
    assert [(p.guest_base, p.size, p.spi, p.irq_flags) for p in ps] == [
        (0xA000_0000, 0x100, 4, 4),
        (0xA000_1000, 0x1000, 5, 1),
    ]


# --- the overlay --------------------------------------------------------------------------

TWO_DTS = """\
/dts-v1/;
/plugin/;

/* VM device-assignment DTBO (AVF docs/device_assignment.md), generated by
 * pytest_vfio_platform.guest.crosvm. crosvm overwrites reg/interrupts of the
 * assigned nodes with its own allocation; the values here are its expected one. */

/ {
\thost {
\t\t#address-cells = <0x2>;
\t\t#size-cells = <0x1>;
\t\tuart-a@10a00000 {
\t\t\treg = <0x0 0x10a00000 0x100>;
\t\t\tandroid,pvmfw,target = <&assigned_uart_a>;
\t\t};
\t\tgpio.b@10b30000 {
\t\t\treg = <0x0 0x10b30000 0x1000>;
\t\t\tandroid,pvmfw,target = <&assigned_gpio_b>;
\t\t};
\t};
};

&{/} {
\tassigned_apb_pclk: assigned-apb-pclk {
\t\tcompatible = "fixed-clock";
\t\t#clock-cells = <0x0>;
\t\tclock-frequency = <24000000>;
\t\tclock-output-names = "assigned_apb_pclk";
\t};
\tassigned_uart_a: serial@a0000000 {
\t\tcompatible = "snps,dw-apb-uart";
\t\treg = <0x0 0xa0000000 0x0 0x100>;
\t\tinterrupts = <0x0 0x4 0x4>;
\t};
\tassigned_gpio_b: gpio@a0001000 {
\t\tcompatible = "arm,pl061", "arm,primecell";
\t\treg = <0x0 0xa0001000 0x0 0x1000>;
\t\tinterrupts = <0x0 0x5 0x1>;
\t\tclocks = <&assigned_apb_pclk>;
\t\tclock-names = "apb_pclk";
\t\tgpio-controller;
\t\t#gpio-cells = <0x2>;
\t};
};
"""


def test_overlay_text_for_two_devices():
    assert vm_dt_overlay(TWO, mem_mib=512) == TWO_DTS


def _dtc(src: str, tmp_path, name: str = "vm") -> tuple[object, str]:
    dts = tmp_path / f"{name}.dts"
    dts.write_text(src)
    out = tmp_path / f"{name}.dtbo"
    r = subprocess.run(
        ["dtc", "-@", "-I", "dts", "-O", "dtb", "-o", str(out), str(dts)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return out, r.stderr


def _get(dtb, node: str, prop: str, t: str = "s") -> str:
    r = subprocess.run(["fdtget", "-t", t, str(dtb), node, prop], capture_output=True, text=True)
    assert r.returncode == 0, f"{node}:{prop}: {r.stderr}"
    return r.stdout.strip()


def _nodes(dtb, node: str) -> list[str]:
    r = subprocess.run(["fdtget", "-l", str(dtb), node], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_overlay_compiles_and_carries_what_crosvm_and_pvmfw_look_up(qemu_devices, tmp_path):
    dtbo, stderr = _dtc(vm_dt_overlay(qemu_devices), tmp_path)
    # the only warnings are dtc not knowing the DT the fragment lands in (crosvm's root)
    kinds = set(re.findall(r"Warning \((\w+)\)", stderr))
    prerequisites = {"pci_device_reg", "pci_device_bus_num", "simple_bus_reg", "i2c_bus_reg"}
    prerequisites |= {"spi_bus_reg", "avoid_unnecessary_addr_size", "unique_unit_address"}
    assert kinds <= set(BASE_UNAWARE_CHECKS) | prerequisites, stderr

    assert _get(dtbo, "/fragment@0", "target-path") == "/"
    assert "__fixups__" not in _nodes(dtbo, "/")  # nothing refers into crosvm's base DT
    clk = "/fragment@0/__overlay__/assigned-apb-pclk"
    assert _get(dtbo, "/__symbols__", "assigned_apb_pclk") == clk
    assert _get(dtbo, clk, "clock-frequency", "u") == "24000000"
    clk_phandle = _get(dtbo, clk, "phandle", "x")

    cmd = crosvm_command(qemu_devices, kernel="k", dtbo_path="d")
    symbols = [v.rsplit("dt-symbol=", 1)[1] for v in _vfio_values(cmd)]
    expected = {
        "assigned_uart0": ("serial@90000000", "arm,pl011 arm,primecell", "0 4 4", 2),
        "assigned_gpio": ("gpio@90001000", "arm,pl061 arm,primecell", "0 5 4", 1),
        "assigned_rtc": ("rtc@90002000", "arm,pl031 arm,primecell", "0 6 4", 1),
    }
    assert symbols == list(expected)
    for dev, sym in zip(qemu_devices, symbols, strict=True):
        node, compat, irq, nclk = expected[sym]
        path = _get(dtbo, "/__symbols__", sym)
        # crosvm's symbol_to_path + extract_fragment_and_subpath need exactly this shape
        assert path == f"/fragment@0/__overlay__/{node}"
        assert _get(dtbo, path, "compatible") == compat
        assert _get(dtbo, path, "reg", "x") == f"0 {node.split('@')[1]} 0 1000"
        assert _get(dtbo, path, "interrupts", "x") == irq
        assert _get(dtbo, path, "clocks", "x") == " ".join([clk_phandle] * nclk)
        # pvmfw: the physical node points at the guest node
        host = f"/host/{dev.name}@{dev.mmio_base:x}"
        assert _get(dtbo, host, "reg", "x") == f"0 {dev.mmio_base:x} 1000"
        assert _get(dtbo, host, "android,pvmfw,target", "x") == _get(dtbo, path, "phandle", "x")
    assert _get(dtbo, "/fragment@0/__overlay__/gpio@90001000", "#gpio-cells", "u") == "2"


def test_overlay_applies_onto_a_crosvm_like_base(qemu_devices, tmp_path):
    """fdtoverlay (libfdt) applies the DTBO onto a DT shaped like crosvm's (root 2/2 cells,
    GIC as interrupt-parent): the devices land at the root, the symbols follow them, the
    phandles are renumbered, and /host (not a fragment) stays out of the guest."""
    base_dts = tmp_path / "base.dts"
    base_dts.write_text(
        '/dts-v1/;\n/ { compatible = "linux,dummy-virt"; #address-cells = <2>; '
        "#size-cells = <2>; interrupt-parent = <&gic>;\n"
        '  gic: intc@3fff0000 { compatible = "arm,gic-v3"; #address-cells = <2>; '
        "#interrupt-cells = <3>; interrupt-controller; reg = <0 0x3fff0000 0 0x10000>; };\n"
        '  chosen { bootargs = "console=ttyS0"; }; };\n'
    )
    base = tmp_path / "base.dtb"
    subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", str(base), str(base_dts)], check=True)
    dtbo = compile_dtbo(vm_dt_overlay(qemu_devices), tmp_path / "vm.dtbo")
    merged = tmp_path / "merged.dtb"
    r = subprocess.run(
        ["fdtoverlay", "-i", str(base), "-o", str(merged), str(dtbo)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    root = _nodes(merged, "/")
    assert {"serial@90000000", "gpio@90001000", "rtc@90002000", "assigned-apb-pclk"} <= set(root)
    assert "host" not in root and "fragment@0" not in root
    assert _get(merged, "/__symbols__", "assigned_uart0") == "/serial@90000000"
    assert _get(merged, "/serial@90000000", "reg", "x") == "0 90000000 0 1000"
    clk = _get(merged, "/assigned-apb-pclk", "phandle", "x")
    gic = _get(merged, "/intc@3fff0000", "phandle", "x")
    assert clk != gic and _get(merged, "/rtc@90002000", "clocks", "x") == clk


def test_compile_dtbo_writes_a_dtb_and_reports_dtc_errors(qemu_devices, tmp_path):
    out = compile_dtbo(vm_dt_overlay(qemu_devices), tmp_path / "sub" / "vm.dtbo")
    assert out.read_bytes()[:4] == bytes.fromhex("d00dfeed")
    with pytest.raises(BuildError, match="does not compile with dtc"):
        compile_dtbo("/dts-v1/;\n/plugin/;\n&{/} { broken", tmp_path / "bad.dtbo")


def test_overlay_placement_follows_mem(qemu_devices):
    src = vm_dt_overlay(qemu_devices, mem_mib=1024)
    assert "assigned_uart0: serial@c0000000 {" in src
    assert "reg = <0x0 0xc0000000 0x0 0x1000>;" in src


# --- refusals -----------------------------------------------------------------------------


def test_amba_device_is_refused_naming_device_and_reason():
    devices = load("qemu").devices  # rtc (the PL031) is on the amba bus in this inventory
    for build in (
        lambda: crosvm_command(devices, kernel="k", dtbo_path="d"),
        lambda: vm_dt_overlay(devices),
    ):
        with pytest.raises(ValueError) as e:
            build()
        msg = str(e.value)
        assert "'rtc'" in msg and "9010000.pl031" in msg and "'amba' bus" in msg
        assert "VFIO_DEVICE_FLAGS_PLATFORM" in msg


def test_duplicate_names_are_refused(qemu_devices):
    twice = [qemu_devices[0], dataclasses.replace(qemu_devices[1], name="uart0")]
    with pytest.raises(ValueError, match=r"device name 'uart0' is listed twice"):
        crosvm_command(twice, kernel="k", dtbo_path="d")
    with pytest.raises(ValueError, match=r"listed twice"):
        vm_dt_overlay(twice)


def test_names_that_collide_as_labels_are_refused():
    a = TWO[0]
    b = dataclasses.replace(TWO[1], name="uart_a")
    with pytest.raises(ValueError, match=r"'uart-a' and 'uart_a' both map to .*assigned_uart_a"):
        vm_dt_overlay([a, b])


def test_dt_symbol_is_a_short_valid_label():
    assert dt_symbol(TWO[1]) == "assigned_gpio_b"
    with pytest.raises(ValueError, match="longer than 31"):
        dt_symbol(dataclasses.replace(TWO[0], name="x" * 40))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"iommu": "smmu"}, r"iommu='smmu'.*pkvm-iommu"),
        ({"dtbo_path": "/x/a,b.dtbo"}, r"dtbo_path .* contains ','"),
        ({"serial_socket": "/x/s=1"}, r"serial_socket .* contains"),
        ({"mem_mib": 0}, r"must be positive"),
    ],
)
def test_bad_options_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        crosvm_command(TWO, **{"kernel": "k", "dtbo_path": "d", **kw})


def test_sysfs_path_with_a_comma_and_empty_list_are_refused():
    with pytest.raises(ValueError, match=r"contains ',' or '='"):
        crosvm_command([dataclasses.replace(TWO[0], sysfs="/sys/x,y")], kernel="k", dtbo_path="d")
    with pytest.raises(ValueError, match="no devices"):
        crosvm_command([], kernel="k", dtbo_path="d")


def test_constants_match_the_sources():
    """The numbers the prediction rests on, as read in crosvm (see the module docstring)."""
    assert crosvm.AARCH64_PHYS_MEM_START == 0x8000_0000
    assert crosvm.AARCH64_PLATFORM_MMIO_SIZE == 0x80_0000
    assert crosvm.FIRST_IRQ == 4
    assert (crosvm.IRQ_LEVEL, crosvm.IRQ_EDGE) == (4, 1)
