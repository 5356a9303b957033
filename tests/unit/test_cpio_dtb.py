"""Initramfs archives are deterministic newc; DT edits render to what dtc merges."""

import stat
import subprocess

import pytest

from pytest_vfio_platform.errors import BuildError
from pytest_vfio_platform.images.cpio import Entry, symlink_entry, text_entry, write_cpio
from pytest_vfio_platform.images.dtb import DtEdit, dts_value, render_edits


def test_cpio_roundtrip_with_cpio_tool(tmp_path):
    out = tmp_path / "a.cpio"
    write_cpio(
        [
            text_entry("init", "#!/bin/sh\n", 0o755),
            symlink_entry("bin/sh", "busybox"),
            Entry("usr/bin/tool", stat.S_IFREG | 0o755, b"\x7fELF"),
        ],
        out,
    )
    listing = subprocess.run(["cpio", "-t", "-v"], input=out.read_bytes(), capture_output=True)
    text = listing.stdout.decode()
    for name in ("init", "bin", "bin/sh -> busybox", "usr/bin/tool"):
        assert name in text
    x = tmp_path / "x"
    x.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=out.read_bytes(), cwd=x, check=True)
    assert (x / "init").read_text() == "#!/bin/sh\n"
    assert (x / "init").stat().st_mode & 0o777 == 0o755


def test_cpio_is_deterministic(tmp_path):
    es = [text_entry("b", "2"), text_entry("a", "1")]
    write_cpio(es, tmp_path / "1")
    write_cpio(list(reversed(es)), tmp_path / "2")
    assert (tmp_path / "1").read_bytes() == (tmp_path / "2").read_bytes()


def test_dts_values():
    assert dts_value("arm,pl061") == '"arm,pl061"'
    assert dts_value(["arm,pl011", "arm,primecell"]) == '"arm,pl011", "arm,primecell"'
    assert dts_value([1, 0x20]) == "<0x1 0x20>"
    assert dts_value({"raw": "<&x 0>"}) == "<&x 0>"
    assert dts_value([]) == ""
    with pytest.raises(BuildError):
        dts_value(True)


def test_edits_compile_with_dtc(tmp_path):
    base = '/dts-v1/;\n/ { #address-cells = <2>; #size-cells = <2>;\n pl061@9030000 { compatible = "arm,pl061", "arm,primecell"; reg = <0 0x9030000 0 0x1000>; old; }; };\n'
    edits = [
        DtEdit(
            "/pl061@9030000",
            set={"compatible": ["arm,pl061"], "dmas": {"raw": "<&d 0>"}, "dma-coherent": []},
            delete=("old",),
        ),
        DtEdit("/", dts="d: dma@1 { #dma-cells = <1>; };"),
    ]
    src = tmp_path / "b.dts"
    src.write_text(base + render_edits(edits))
    r = subprocess.run(
        ["dtc", "-q", "-I", "dts", "-O", "dts", str(src)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    node = r.stdout[r.stdout.index("pl061@9030000") :]
    node = node[: node.index("};")]
    assert 'compatible = "arm,pl061";' in node
    assert "dma-coherent;" in node and "dmas = <" in node and "old;" not in node
