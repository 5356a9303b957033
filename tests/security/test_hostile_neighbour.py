"""A second, unprivileged user on the same host tries what a hostile neighbour would: cut a
board's power, boot their own kernel through its fastboot port, take the guest's root
console, plant symlinks and directories where the rack keeps its state. Every attempt is
refused, and the owner's board host still answers the owner.

The neighbour is a real user (made here with useradd, so this needs root, as the lab side
does); its commands run under runuser with the system Python, outside our process.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_vfio_platform.errors import SetupError
from pytest_vfio_platform.private import private_dir
from pytest_vfio_platform.ptyrelay import PtyRelay

NEIGHBOUR = "vfio-neighbour"

pytestmark = pytest.mark.skipif(
    os.getuid() != 0, reason="needs root: it makes a second user to attack from"
)


@pytest.fixture(scope="module")
def neighbour() -> Iterator[pwd.struct_passwd]:
    try:
        pw = pwd.getpwnam(NEIGHBOUR)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", NEIGHBOUR],
            check=True,
        )
        pw = pwd.getpwnam(NEIGHBOUR)
    yield pw
    # nothing of the neighbour's outlives the suite: a refused `fastboot` client, for one,
    # retries at full CPU for ever (seen: two of them ate a core each for 17 minutes)
    subprocess.run(["pkill", "-KILL", "-u", NEIGHBOUR], check=False)


def as_neighbour(code: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run Python code as the neighbour; it prints what it got."""
    return subprocess.run(
        ["runuser", "-u", NEIGHBOUR, "--", "/usr/bin/python3", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
    )


@pytest.fixture
def shared_tmp():
    """A scratch directory the neighbour can traverse (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="vfio-neighbour-test-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def board_host(shared_tmp):
    """A real labsim board host (power relay, fastboot, console lines), powered off."""
    tmp_path = shared_tmp
    d = tmp_path / "rack" / "board-1"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labsim.boardd",
            "--name",
            "board-1",
            "--dir",
            str(d),
            "--machine-args",
            "-M virt",
        ],
        cwd=Path(__file__).resolve().parents[2],
    )
    state = d / "state.json"
    end = time.monotonic() + 30
    while not state.is_file():
        assert proc.poll() is None, "board host exited"
        assert time.monotonic() < end, "board host did not come up"
        time.sleep(0.1)
    # the rack dir above the board's is world-traversable here only so the neighbour can
    # try the files; the real rack dir is 0700, which refuses them one step earlier
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / "rack", 0o755)
    try:
        yield d, json.loads(state.read_text())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def test_neighbour_cannot_switch_the_power_relay(neighbour, board_host):
    _, state = board_host
    url = state["http"]
    assert _get(f"{url}/power/0/1") == "1"
    r = as_neighbour(f"""
        import urllib.request, urllib.error
        for path in ("/power/0/0", "/status"):
            try:
                urllib.request.urlopen("{url}" + path, timeout=10)
                print("ANSWERED", path)
            except urllib.error.HTTPError as e:
                print("REFUSED", e.code, e.read().decode())
        """)
    assert "ANSWERED" not in r.stdout, r.stdout + r.stderr
    assert r.stdout.count("REFUSED 403") == 2, r.stdout + r.stderr
    assert _get(f"{url}/power/0") == "1", "the neighbour's request cut the power"


def test_neighbour_cannot_use_the_fastboot_port(neighbour, board_host):
    """At the protocol level: the neighbour's handshake gets no answer, the connection is
    closed (the fastboot tool itself would only retry until it gives up)."""
    _, state = board_host
    port = state["fastboot_port"]
    r = as_neighbour(f"""
        import socket
        s = socket.create_connection(("127.0.0.1", {port}), timeout=10)
        s.sendall(b"FB01")
        try:
            got = s.recv(4)
        except OSError as e:
            got = repr(e).encode()
        print("GOT", got)
        """)
    assert "GOT b''" in r.stdout or "Reset" in r.stdout, r.stdout + r.stderr
    mine = subprocess.run(
        ["fastboot", "-s", f"tcp:127.0.0.1:{port}", "getvar", "product"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "product: qemu-virt" in mine.stdout + mine.stderr, mine.stdout + mine.stderr


def test_neighbour_cannot_reach_the_console_lines(neighbour, board_host):
    """The board's serial lines (its root console among them): neither the ptys labgrid
    opens nor the unix sockets QEMU connects to."""
    d, state = board_host
    socks = [str(p) for p in sorted(d.glob("*.sock"))]
    ptys = sorted(state["lines"].values())
    assert {Path(p).name for p in socks} >= {"console.sock", "guest.sock"} and len(ptys) == 3
    r = as_neighbour(f"""
        import os, socket
        for p in {socks!r}:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(p)
                print("CONNECTED", p)
            except OSError as e:
                print("REFUSED", p, e.strerror)
        for p in {ptys!r}:
            try:
                os.open(p, os.O_RDWR | os.O_NOCTTY)
                print("OPENED", p)
            except OSError as e:
                print("REFUSED", p, e.strerror)
        """)
    assert "CONNECTED" not in r.stdout and "OPENED" not in r.stdout, r.stdout + r.stderr
    assert r.stdout.count("REFUSED") == len(socks) + len(ptys), r.stdout + r.stderr


def test_neighbour_cannot_open_a_guest_console_pty(neighbour, shared_tmp):
    relay = PtyRelay("guest", shared_tmp / "guest-console.sock", stall_drop=None)
    try:
        r = as_neighbour(f"""
            import os, socket
            try:
                os.open({relay.port!r}, os.O_RDWR | os.O_NOCTTY)
                print("OPENED pty")
            except OSError as e:
                print("REFUSED pty", e.strerror)
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect({str(relay.sock_path)!r})
                print("CONNECTED socket")
            except OSError as e:
                print("REFUSED socket", e.strerror)
            """)
        assert "REFUSED pty" in r.stdout and "REFUSED socket" in r.stdout, r.stdout + r.stderr
    finally:
        relay.close()


@pytest.mark.parametrize("plant", ["directory", "symlink"])
def test_a_rack_dir_planted_by_the_neighbour_is_refused(neighbour, shared_tmp, plant):
    """/tmp-style: a world-writable parent where the neighbour gets there first."""
    base = shared_tmp / "tmp"
    base.mkdir()
    os.chmod(base, 0o1777)
    target = base / "vfio-rack-0"
    code = (
        f"import os; os.mkdir({str(target)!r}, 0o777); os.chmod({str(target)!r}, 0o777)"
        if plant == "directory"
        else f"os_=__import__('os'); os_.mkdir({str(base / 'theirs')!r}); "
        f"os_.symlink({str(base / 'theirs')!r}, {str(target)!r})"
    )
    r = as_neighbour(code)
    assert r.returncode == 0, r.stderr
    with pytest.raises(SetupError, match="symlink|belongs to uid"):
        private_dir(target)
    # and nothing was written into the neighbour's directory
    theirs = target if plant == "directory" else base / "theirs"
    assert list(theirs.iterdir()) == []


@pytest.fixture
def console_port(shared_tmp):
    """The local rack's ser2net wrapper, started as labgrid's exporter starts ser2net, on a
    pty standing in for a board console that has just printed a root prompt."""
    from labsim import ser2net
    from pytest_vfio_platform.board import free_port

    bindir = ser2net.install(private_dir(shared_tmp / "rack") / "bin")
    master, slave = os.openpty()
    pty = os.ttyname(slave)
    port = free_port()
    proc = subprocess.Popen(
        [
            str(bindir / "ser2net"),
            "-d",
            "-n",
            "-Y",
            f"connection: &con01#  accepter: telnet(rfc2217,mode=server),tcp,{port}",
            "-Y",
            f"  connector: serialdev(nouucplock=true),{pty},115200n81,local",
        ],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    end = time.monotonic() + 10
    while not subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True
    ).stdout.strip():
        assert proc.poll() is None and time.monotonic() < end, "ser2net did not come up"
        time.sleep(0.05)
    time.sleep(0.5)  # the unix accepter behind the front-end
    try:
        yield port, master
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.close(master)
        os.close(slave)


def _console_read(port: int) -> str:
    """Python that connects to the console port and prints what came before the prompt."""
    return f"""
import socket, time
s = socket.create_connection(("127.0.0.1", {port}), timeout=5)
time.sleep(1.0)
s.settimeout(3)
got = b""
try:
    while b"root@board" not in got:
        d = s.recv(4096)
        if not d:
            break
        got += d
except OSError as e:
    got += repr(e).encode()
print("GOT", got)
"""


def test_neighbour_cannot_open_a_board_console(neighbour, console_port):
    """ser2net's console port (a root shell) relays the owner, and closes on anyone else."""
    port, master = console_port

    def prompt_soon() -> None:  # the board prints once the client has connected
        time.sleep(0.5)
        os.write(master, b"root@board:~# ")

    import threading

    t = threading.Thread(target=prompt_soon)
    t.start()
    r = as_neighbour(_console_read(port))
    t.join()
    assert "root@board" not in r.stdout, r.stdout + r.stderr
    assert "GOT b''" in r.stdout or "Reset" in r.stdout, r.stdout + r.stderr
    # the owner's connection, the same way: the prompt comes through
    t = threading.Thread(target=prompt_soon)
    t.start()
    mine = subprocess.run(
        [sys.executable, "-c", _console_read(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    t.join()
    assert "root@board" in mine.stdout, mine.stdout + mine.stderr


def _answers(addr: str) -> bool:
    from pytest_vfio_platform.rack.cli import tool

    cmd = [tool("labgrid-client"), "-x", addr, "places"]
    return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0


@pytest.fixture
def coordinator(shared_tmp):
    """The local rack's labgrid coordinator, started as `labsim.local up` starts it."""
    from labsim.local import _port_open, coordinator_argv
    from pytest_vfio_platform.board import free_port

    cdir = private_dir(shared_tmp / "rack" / "coordinator")
    addr = f"127.0.0.1:{free_port()}"
    sock = cdir / "coordinator.sock"
    proc = subprocess.Popen(
        coordinator_argv(addr, sock),
        cwd=cdir,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    end = time.monotonic() + 30
    while not (_port_open(addr) and _answers(addr)):
        assert proc.poll() is None and time.monotonic() < end, "coordinator did not come up"
        time.sleep(0.1)
    try:
        yield addr
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _h2_hello(addr: str) -> str:
    """Python that opens HTTP/2 as gRPC's clients (labgrid-client, the exporter) do and
    prints the hex of the first frame header that comes back ('' when none)."""
    host, port = addr.rsplit(":", 1)
    return f"""
import socket
s = socket.create_connection(({host!r}, {port}), timeout=5)
s.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
got = b""
try:
    while len(got) < 9:
        d = s.recv(4096)
        if not d:
            break
        got += d
except OSError as e:
    print("ERR", repr(e))
print("HEADER=" + got[:9].hex())
"""


def test_neighbour_cannot_talk_to_the_coordinator(neighbour, coordinator):
    """labgrid's coordinator has no authentication: whoever speaks gRPC to it can acquire a
    free place, kick the holder of a taken one, or read every exporter's resource addresses.
    The neighbour's connection is closed before a byte of HTTP/2 comes back; the owner's
    gets the server's SETTINGS frame, and labgrid-client works through the same port."""
    hello = _h2_hello(coordinator)
    r = as_neighbour(hello)
    assert "HEADER=\n" in r.stdout, r.stdout + r.stderr
    mine = subprocess.run([sys.executable, "-c", hello], capture_output=True, text=True, timeout=30)
    # a frame header: 3 bytes length, then type 4 (SETTINGS)
    assert re.search(r"HEADER=[0-9a-f]{6}04", mine.stdout), mine.stdout + mine.stderr
    from pytest_vfio_platform.rack.cli import client

    client(coordinator, "-p", "owners-place", "create")
    assert "owners-place" in client(coordinator, "places")
