"""The fastboot-over-TCP device against the real clients: Debian's fastboot and labgrid's driver.

The server here is a named fake of a Pixel in fastboot mode (no phone can be attached to CI);
what these tests pin is the client side — what `fastboot` 29.0.6 and labgrid's
AndroidFastbootDriver send — and that the device side survives clients that misbehave.
"""

import os
import re
import shutil
import socket
import struct
import subprocess
import textwrap
import time

import pytest

from labsim.fastbootd import FastbootServer
from pytest_vfio_platform.errors import SetupError
from pytest_vfio_platform.images.bootimg import make_boot_img, verify_round_trip

FASTBOOT = shutil.which("fastboot")
pytestmark = pytest.mark.skipif(
    FASTBOOT is None, reason="fastboot not installed (Debian package 'fastboot'; ci/setup)"
)
CMDLINE = "console=ttyAMA0 rdinit=/init"


class Calls:
    """What the device was asked to do, and what it should answer."""

    def __init__(self):
        self.boot, self.flash, self.erase, self.reboot, self.cont = [], [], [], [], 0
        self.boot_error = None

    def on_boot(self, path):
        self.boot.append((path, path.read_bytes()))
        return self.boot_error

    def on_flash(self, part, path):
        self.flash.append((part, path.read_bytes()))

    def on_erase(self, part):
        self.erase.append(part)

    def on_reboot(self, target):
        self.reboot.append(target)

    def on_continue(self):
        self.cont += 1

    @staticmethod
    def on_oem(args):
        return [f"value-of-{args.split()[-1]}"] if args.startswith("getenv ") else None


@pytest.fixture
def calls():
    return Calls()


@pytest.fixture
def server(tmp_path, calls):
    srv = FastbootServer(
        workdir=tmp_path / "device",
        variables={"product": "fake-pixel", "serialno": "FAKE1234"},
        on_boot=calls.on_boot,
        on_flash=calls.on_flash,
        on_erase=calls.on_erase,
        on_reboot=calls.on_reboot,
        on_continue=calls.on_continue,
        on_oem=calls.on_oem,
        idle_timeout=10,
    )
    srv.start()
    yield srv
    srv.stop()
    assert not srv.errors or all("handshake" in e for e in srv.errors)


def fastboot(srv, *args):
    return subprocess.run(
        [FASTBOOT, "-s", srv.serial, *args], capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def boot_img(tmp_path):
    parts = {}
    for name, size in (("kernel", 300_000), ("ramdisk", 120_000), ("dtb", 5_000)):
        parts[name] = tmp_path / name
        parts[name].write_bytes(os.urandom(size))
    img = make_boot_img(
        parts["kernel"], parts["ramdisk"], CMDLINE, tmp_path / "boot.img", dtb=parts["dtb"]
    )
    return img, parts


def test_getvar(server):
    r = fastboot(server, "getvar", "product")
    assert r.returncode == 0, r.stderr
    assert "product: fake-pixel" in r.stderr  # fastboot prints variables on stderr
    assert server.commands == ["getvar:product"]


def test_boot_sends_the_exact_image(server, calls, boot_img, tmp_path):
    img, parts = boot_img
    r = fastboot(server, "boot", str(img))
    assert r.returncode == 0, r.stderr
    size = img.stat().st_size
    assert server.commands == [f"download:{size:08x}", "boot"]  # fastboot 29.0.6: no getvar
    assert len(calls.boot) == 1
    saved, data = calls.boot[0]
    assert data == img.read_bytes()
    assert saved == tmp_path / "device" / "download-1.img"
    verify_round_trip(saved, tmp_path / "unpacked", cmdline=CMDLINE, **parts)
    log = (tmp_path / "device" / "fastboot-commands.jsonl").read_text().splitlines()
    assert len(log) == 2 and '"command": "boot"' in log[1] and '"reply": "OKAY"' in log[1]


def test_flash_sequence(server, calls, tmp_path):
    dtbo = tmp_path / "dtbo.img"
    dtbo.write_bytes(os.urandom(3_000_000))  # several of the client's transport chunks
    r = fastboot(server, "flash", "dtbo", str(dtbo))
    assert r.returncode == 0, r.stderr
    assert server.commands == [
        "getvar:has-slot:dtbo",
        "getvar:max-download-size",
        "getvar:is-logical:dtbo",
        f"download:{3_000_000:08x}",
        "flash:dtbo",
    ]
    assert calls.flash == [("dtbo", dtbo.read_bytes())]


def test_pixel_like_slots_flash_the_current_slot(tmp_path, calls):
    variables = {"slot-count": "2", "current-slot": "a", "has-slot:boot": "yes"}
    with FastbootServer(workdir=tmp_path, variables=variables, on_flash=calls.on_flash) as srv:
        img = tmp_path / "boot.img"
        img.write_bytes(b"x" * 4096)
        assert fastboot(srv, "flash", "boot", str(img)).returncode == 0
        assert fastboot(srv, "--set-active=b").returncode == 0
    assert calls.flash == [("boot_a", b"x" * 4096)]
    assert srv.commands[1] == "getvar:current-slot"
    assert srv.commands[-1] == "set_active:b"
    assert srv.variables["current-slot"] == "b"


def test_boot_failure_reaches_the_client(server, calls, boot_img):
    calls.boot_error = "QEMU exited: could not load the kernel\n  qemu-system-aarch64: detail"
    r = fastboot(server, "boot", str(boot_img[0]))
    assert r.returncode != 0
    assert "FAILED (remote: 'QEMU exited: could not load the kernel')" in r.stderr
    assert "(bootloader)   qemu-system-aarch64: detail" in r.stderr
    assert server.records[-1].reply.startswith("FAILQEMU exited")


def test_boot_callback_exception_reaches_the_client(server, calls, boot_img):
    def broken(path):
        raise RuntimeError("no free QEMU slot")

    server.on_boot = broken
    r = fastboot(server, "boot", str(boot_img[0]))
    assert r.returncode != 0
    assert "no free QEMU slot" in r.stderr
    assert fastboot(server, "getvar", "serialno").returncode == 0


def test_other_commands(server, calls):
    for args in (
        ["erase", "userdata"],
        ["continue"],
        ["reboot"],
        ["reboot", "bootloader"],
        ["oem", "getenv", "bootargs"],
    ):
        r = fastboot(server, *args)
        assert r.returncode == 0, (args, r.stderr)
    assert "(bootloader) value-of-bootargs" in r.stderr
    assert calls.erase == ["userdata"]
    assert calls.cont == 1
    assert calls.reboot == ["system", "bootloader"]
    assert [c for c in server.commands if not c.startswith("getvar")] == [
        "erase:userdata",
        "continue",
        "reboot",
        "reboot-bootloader",
        "oem getenv bootargs",
    ]
    r = fastboot(server, "oem", "frobnicate")
    assert r.returncode != 0 and "unknown command 'oem frobnicate'" in r.stderr


# -- misbehaving clients, spoken to over a raw socket ---------------------------------------


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "server closed the connection"
        buf += chunk
    return buf


def _connect(srv):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(b"FB01")
    assert _recv_exact(s, 4) == b"FB01"
    return s


def _send(s, payload):
    s.sendall(struct.pack(">Q", len(payload)) + payload)


def _reply(s):
    (n,) = struct.unpack(">Q", _recv_exact(s, 8))
    return _recv_exact(s, n)


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_gone_mid_download_leaves_the_server_serving(server, calls, how):
    s = _connect(server)
    _send(s, b"download:00100000")
    assert _reply(s) == b"DATA00100000"
    s.sendall(struct.pack(">Q", 0x100000) + os.urandom(70_000))  # a frame cut short
    if how == "reset":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    r = fastboot(server, "getvar", "product")
    assert r.returncode == 0 and "product: fake-pixel" in r.stderr
    first = server.records[0]
    assert first.command == "download:00100000"
    # a reset may discard what the server had not read yet; a close delivers it all
    expect = r"disconnected after 70000 of" if how == "close" else r"disconnected after \d+ of"
    assert re.fullmatch(expect + " 1048576 bytes", first.reply)
    assert not (server.workdir / "download-1.img").exists()
    r = fastboot(server, "boot", "/dev/null")  # nothing staged: the partial data is not bootable
    assert calls.boot == []


def test_real_fastboot_killed_mid_download(server, calls, tmp_path):
    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        f.truncate(500 * 1024 * 1024)  # sparse: costs no disk; ~2 s to send on loopback
    p = subprocess.Popen(
        [FASTBOOT, "-s", server.serial, "flash", "dtbo", str(big)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = server.workdir / "download-1.img"
    deadline = time.monotonic() + 20
    while not (partial.exists() and partial.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.001)
    p.kill()
    p.wait()
    r = fastboot(server, "getvar", "product")
    assert r.returncode == 0 and "product: fake-pixel" in r.stderr
    download = [x for x in server.records if x.command.startswith("download:")]
    assert re.fullmatch(r"disconnected after \d+ of 524288000 bytes", download[0].reply)
    assert not partial.exists()
    assert calls.flash == []


def test_protocol_errors_are_answered_or_dropped(server):
    s = _connect(server)
    _send(s, b"frobnicate:now")
    assert _reply(s) == b"FAILunknown command 'frobnicate:now'"
    _send(s, b"getvar:" + b"v" * 1000)  # a reply over 256 bytes would corrupt the next one
    replies = [_reply(s) for _ in range(6)]
    assert [r[:4] for r in replies] == [b"INFO"] * 5 + [b"FAIL"]
    assert all(len(r) <= 256 for r in replies)
    assert b"".join(r[4:] for r in replies[:5]) == b"unknown variable '" + b"v" * 1000 + b"'"
    _send(s, b"boot")
    assert _reply(s).startswith(b"FAILboot: nothing downloaded")
    _send(s, b"download:zz")
    assert _reply(s).startswith(b"FAILdownload: size 'zz' is not hex")
    _send(s, b"download:7fffffff")
    assert b"max-download-size" in _reply(s)
    s.close()
    bad = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    bad.sendall(b"GET / HTTP/1.0\r\n\r\n")
    try:
        assert bad.recv(16) == b""  # dropped without a handshake
    except ConnectionResetError:
        pass  # closed with our request unread: the kernel resets instead
    bad.close()
    assert fastboot(server, "getvar", "product").returncode == 0
    assert any("bad handshake b'GET '" in e for e in server.errors)


def test_stop_with_a_client_connected(tmp_path):
    srv = FastbootServer(workdir=tmp_path)
    srv.start()
    s = _connect(srv)
    srv.stop()
    assert s.recv(1) == b""
    s.close()
    srv.stop()


# -- labgrid's AndroidFastbootDriver ----------------------------------------------------------


def test_labgrid_driver(server, calls, boot_img, tmp_path):
    from labgrid import Environment

    env_file = tmp_path / "env.yaml"
    env_file.write_text(
        textwrap.dedent(
            f"""\
            targets:
              main:
                resources:
                  AndroidNetFastboot:
                    address: 127.0.0.1
                    port: {server.port}
                    protocol: tcp
                drivers:
                  AndroidFastbootDriver: {{}}
            tools:
              fastboot: {FASTBOOT}
            """
        )
    )
    env = Environment(str(env_file))
    try:
        target = env.get_target("main")
        drv = target.get_driver("AndroidFastbootDriver")
        assert drv.getvar("product") == "fake-pixel"
        img, _ = boot_img
        drv.boot(str(img))
        dtbo = tmp_path / "dtbo.img"
        dtbo.write_bytes(os.urandom(10_000))
        drv.flash("dtbo", str(dtbo))
    finally:
        env.cleanup()
    assert [data for _, data in calls.boot] == [img.read_bytes()]
    assert calls.flash == [("dtbo", dtbo.read_bytes())]
    assert server.commands[0] == "getvar:product"
    assert server.commands[1:3] == [f"download:{img.stat().st_size:08x}", "boot"]
    assert server.commands[-1] == "flash:dtbo"


def test_oversized_data_frame_drops_the_connection(server):
    s = _connect(server)
    _send(s, b"download:00000010")
    assert _reply(s) == b"DATA00000010"
    _send(s, b"x" * 17)
    try:
        assert s.recv(64) == b""
    except ConnectionResetError:
        pass  # dropped with the frame unread
    s.close()
    assert fastboot(server, "getvar", "product").returncode == 0
    assert (
        server.records[0].reply
        == "dropped: download: a 17-byte frame with 16 of 16 bytes outstanding"
    )
    assert not (server.workdir / "download-1.img").exists()
    assert server.errors == [
        f"{server.records[0].client}: download: a 17-byte frame with 16 of 16 bytes "
        "outstanding; connection dropped"
    ]
    server.errors.clear()  # expected: the fixture checks for unexpected ones


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="labgrid 26.0.1 oem_getenv wants lines starting '(bootloader) '; fastboot 29.0.6 "
    "prints an oem command's INFO after a 51-space status column, so no line matches",
)
def test_labgrid_oem_getenv_with_debian_fastboot(server, tmp_path):
    from labgrid import Environment

    env_file = tmp_path / "env.yaml"
    env_file.write_text(
        "targets:\n  main:\n    resources:\n      AndroidNetFastboot:\n"
        f"        {{address: 127.0.0.1, port: {server.port}, protocol: tcp}}\n"
        "    drivers:\n      AndroidFastbootDriver: {}\n"
    )
    env = Environment(str(env_file))
    try:
        drv = env.get_target("main").get_driver("AndroidFastbootDriver")
        assert drv.oem_getenv("bootargs") == "value-of-bootargs"
    finally:
        env.cleanup()


def test_a_planted_symlink_at_the_next_download_is_not_written_through(server, tmp_path):
    """Shared host: the download names are predictable; a symlink planted at the next one
    (pointing at a file the server's user can write) must not receive the image."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (server.workdir / "download-1.img").symlink_to(victim)
    blob = tmp_path / "blob.img"
    blob.write_bytes(os.urandom(4096))
    r = fastboot(server, "flash", "dtbo", str(blob))
    assert r.returncode != 0 and "cannot create download-1.img" in r.stderr
    assert victim.read_bytes() == b"precious"


def test_one_staged_download_at_a_time(server, calls, tmp_path):
    """Each download replaces the staged one: the disk never holds more than one image."""
    for i in range(3):
        blob = tmp_path / f"b{i}"
        blob.write_bytes(os.urandom(2048))
        assert fastboot(server, "flash", "dtbo", str(blob)).returncode == 0
    assert sorted(p.name for p in server.workdir.glob("download-*")) == ["download-3.img"]
    assert [d for _, d in calls.flash] == [(tmp_path / f"b{i}").read_bytes() for i in range(3)]


def test_a_workdir_open_to_others_is_refused(tmp_path):
    d = tmp_path / "shared"
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    with pytest.raises(SetupError, match="open to others"):
        FastbootServer(workdir=d).start()
