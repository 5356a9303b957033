"""A fastboot device over TCP: what `fastboot -s tcp:HOST:PORT` talks to.

Two uses, one implementation:

- the *bootloader* of a QEMU board in the local labgrid rack: `on_boot` receives the boot.img
  that `fastboot boot` sent and starts QEMU from its parts, so the rack is driven exactly like
  a device lab (labgrid's AndroidFastbootDriver, the real `fastboot` binary);
- a NAMED FAKE of a Pixel phone in fastboot mode, for tests. A Pixel cannot be here; what the
  tests exercise for real is the client side — Debian's `fastboot` (29.0.6) and labgrid's
  AndroidFastbootDriver — against a device that speaks the protocol and records every command.
  Nothing here proves that a real bootloader accepts an image.

Protocol (AOSP system/core/fastboot/README.md, "TCP Protocol v1"): both sides send "FB01", then
every message is an 8-byte big-endian length and the payload. Commands are ASCII (at most 4096
bytes); replies start with OKAY, FAIL, DATA or INFO and are at most 256 bytes — the client reads
256 per message, so a longer reply would corrupt the next one. A download is `download:%08x`,
the reply `DATA%08x`, then the bytes, then OKAY; fastboot 29.0.6 sends the bytes as a single
frame however large (measured: 40 MB in one), so they are streamed to disk, never held whole.

One client at a time, as on a device; a client that vanishes (even mid-download) costs only its
connection. stdlib only: the rack and the tests import it without extra packages.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from labsim.peer import is_owner, tcp_peer_uid
from pytest_vfio_platform.private import create_private, private_dir

HANDSHAKE = b"FB01"
COMMAND_MAX = 4096
RESPONSE_MAX = 256  # the client's FB_RESPONSE_SZ
MESSAGE_MAX = RESPONSE_MAX - 4
# Bounded on a shared host: the last RECORDS_KEPT commands in memory, the command log rotated
# (one previous file kept) past LOG_LIMIT bytes.
RECORDS_KEPT = 10_000
LOG_LIMIT = 4 << 20


def rotate(path: Path, limit: int) -> None:
    """Move path to path.1 (replacing an older one) once it has grown past limit."""
    try:
        if path.stat().st_size > limit:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass


DEFAULT_MAX_DOWNLOAD = 512 * 1024 * 1024
LOG_NAME = "fastboot-commands.jsonl"

DEFAULT_VARIABLES: dict[str, str] = {
    "version": "0.4",
    "version-bootloader": "pytest-vfio-platform-fastbootd",
    "product": "fake-fastboot-device",
    "serialno": "FAKE0000",
    "max-download-size": f"{DEFAULT_MAX_DOWNLOAD:#x}",
    "is-userspace": "no",
    "secure": "no",
    "unlocked": "yes",
}

# A callback's verdict: None is success; a string, or an exception's text, goes back as FAIL.
Result = str | None
BootCallback = Callable[[Path], Result]
FlashCallback = Callable[[str, Path], Result]
EraseCallback = Callable[[str], Result]
RebootCallback = Callable[[str], Result]
ContinueCallback = Callable[[], Result]
OemCallback = Callable[[str], Iterable[str] | None]


@dataclass(frozen=True)
class Record:
    """One command as received, and how it ended (one JSONL line).

    reply is the final message as sent ("OKAY", "OKAY0.4", "FAILwhy"), or what cut the command
    short: "disconnected after N of M bytes", "dropped: <framing error>".
    """

    time: float
    client: str
    command: str
    reply: str
    file: str | None = None  # the download file this command wrote or used


class _Disconnected(Exception):
    """The client went away; only its connection ends."""


class _ProtocolError(Exception):
    """The client broke the framing; the connection is dropped as a device would."""


class FastbootServer:
    """A fastboot-over-TCP device serving one client at a time on a background thread.

    Downloads are saved as workdir/download-N.img (N from 1), one at a time: the staged image
    stays for the test to inspect until the next download replaces it. Every command is kept in `records` and appended to workdir/fastboot-commands.jsonl.
    `variables` override DEFAULT_VARIABLES; `has-slot:X` is "no" unless set (a non-A/B device),
    so a Pixel-like fake sets e.g. {"slot-count": "2", "current-slot": "a", "has-slot:boot":
    "yes"}.

    Callbacks run on the server thread before the reply is sent; returning a string or raising
    turns the reply into FAIL with that text (multi-line text is sent as INFO lines first), so
    `fastboot` prints why. on_reboot gets "system", "bootloader", "fastboot" or "recovery";
    on_oem gets the text after "oem " and returns lines to show as INFO (None: unknown command).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        workdir: Path,
        variables: dict[str, str] | None = None,
        on_boot: BootCallback | None = None,
        on_flash: FlashCallback | None = None,
        on_erase: EraseCallback | None = None,
        on_reboot: RebootCallback | None = None,
        on_continue: ContinueCallback | None = None,
        on_oem: OemCallback | None = None,
        idle_timeout: float = 60.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.workdir = Path(workdir)
        self.variables = {**DEFAULT_VARIABLES, **(variables or {})}
        self.on_boot = on_boot
        self.on_flash = on_flash
        self.on_erase = on_erase
        self.on_reboot = on_reboot
        self.on_continue = on_continue
        self.on_oem = on_oem
        self.idle_timeout = idle_timeout
        self.log_path = self.workdir / LOG_NAME
        self._records: collections.deque[Record] = collections.deque(maxlen=RECORDS_KEPT)
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._downloads = 0
        self._staged: Path | None = None  # the last complete download, as in device RAM
        self.errors: list[str] = []  # connection-level trouble (bad handshake, framing)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> int:
        """Listen and serve in the background; the bound port (useful with port=0)."""
        if self._thread is not None:
            raise RuntimeError("FastbootServer already started")
        private_dir(self.workdir)
        sock = socket.create_server((self.host, self._requested_port), reuse_port=False)
        sock.settimeout(0.5)  # belt and braces: stop() also shuts the socket down
        self._listener = sock
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"fastbootd:{self.port}", daemon=True
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stop serving; a connected client is cut off. Safe to call twice."""
        self._stopping.set()
        for sock in (self._listener, self._client):  # wakes a blocked accept() or recv()
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> FastbootServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._listener is None:
            return self._requested_port
        return self._listener.getsockname()[1]

    @property
    def serial(self) -> str:
        """What `fastboot -s` and labgrid's AndroidNetFastboot (protocol tcp) name it by."""
        return f"tcp:{self.host}:{self.port}"

    @property
    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    @property
    def commands(self) -> list[str]:
        """The commands received, in order, exactly as sent (e.g. 'download:00001000')."""
        return [r.command for r in self.records]

    # -- connection handling -----------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as e:
                if self._stopping.is_set():
                    return
                self._note(f"accept failed: {e}")  # e.g. out of file descriptors: retry
                time.sleep(0.5)
                continue
            peer = f"{addr[0]}:{addr[1]}"
            if not is_owner(conn):  # fastboot boots what it is sent: only for the owner
                uid = tcp_peer_uid(conn)
                self._note(f"{peer}: refused, connection from uid {uid} (only the owner's)")
                conn.close()
                continue
            self._client = conn
            if self._stopping.is_set():  # stop() ran between accept() and the line above
                conn.close()
                return
            try:
                self._serve(conn, peer)
            except (_Disconnected, TimeoutError, ConnectionError):
                pass
            except _ProtocolError as e:
                self._note(f"{peer}: {e}; connection dropped")
            except OSError as e:
                if not self._stopping.is_set():
                    self._note(f"{peer}: {e}; connection dropped")
            except Exception as e:  # a bug here must not take the device off the network
                self._note(f"{peer}: internal error {type(e).__name__}: {e}; connection dropped")
            finally:
                self._client = None
                conn.close()

    def _note(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    def _serve(self, conn: socket.socket, peer: str) -> None:
        conn.settimeout(self.idle_timeout)
        # replies are small and often several per command (INFO..., OKAY): without this,
        # Nagle and the client's delayed ACK add ~40 ms to each such command
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = _recv_exact(conn, 4)
        if hello[:2] != b"FB" or not hello[2:].isdigit() or int(hello[2:]) < 1:
            raise _ProtocolError(f"bad handshake {hello!r} (expected b'FB01')")
        conn.sendall(HANDSHAKE)
        while True:
            try:
                frame = _recv_frame(conn, COMMAND_MAX)
            except _Disconnected:
                return  # a client ends its session by closing
            self._dispatch(conn, peer, frame.decode("ascii", "replace"))

    def _dispatch(self, conn: socket.socket, peer: str, command: str) -> None:
        """Serve one command, then record it *before* the final reply, so that a client (a
        test) that has its answer always finds the command in the log."""
        try:
            reply, file = self._handle(conn, command)
        except _Disconnected as e:
            self._record(Record(time.time(), peer, command, f"disconnected {e}"))
            raise
        except Exception as e:
            self._record(Record(time.time(), peer, command, f"dropped: {e}"))
            raise
        self._record(Record(time.time(), peer, command, reply.decode("ascii"), file))
        _send(conn, reply)

    def _record(self, record: Record) -> None:
        with self._lock:
            self._records.append(record)
            rotate(self.log_path, LOG_LIMIT)
            with open(self.log_path, "a") as f:
                f.write(json.dumps(asdict(record)) + "\n")

    # -- commands ------------------------------------------------------------------------------

    def _handle(self, conn: socket.socket, command: str) -> tuple[bytes, str | None]:
        """Serve one command up to its final reply (returned, not sent) and the file involved.

        Intermediate messages (INFO, DATA) are sent from here."""
        if command.startswith("oem ") or command == "oem":
            return self._oem(conn, command[4:]), None
        name, _, arg = command.partition(":")
        if name == "getvar":
            return self._getvar(conn, arg), None
        if name == "download":
            return self._download(conn, arg)
        if name in ("boot", "flash"):
            if self._staged is None:
                return _fail(conn, f"{name}: nothing downloaded; send the image first"), None
            staged = str(self._staged)
            if name == "boot":
                return self._finish(conn, self.on_boot, self._staged), staged
            if not arg:
                return _fail(conn, "flash: which partition? (flash:NAME)"), staged
            return self._finish(conn, self.on_flash, arg, self._staged), staged
        if name == "erase":
            if not arg:
                return _fail(conn, "erase: which partition? (erase:NAME)"), None
            return self._finish(conn, self.on_erase, arg), None
        if name == "set_active":
            if arg not in ("a", "b"):
                return _fail(conn, f"set_active: no slot '{arg}' (a or b)"), None
            self.variables["current-slot"] = arg
            return _okay(), None
        if command == "continue":
            return self._finish(conn, self.on_continue), None
        if command == "reboot" or command.startswith("reboot-"):
            target = command.partition("-")[2] or "system"
            if target not in ("system", "bootloader", "fastboot", "recovery"):
                return _fail(conn, f"unknown reboot target '{target}'"), None
            return self._finish(conn, self.on_reboot, target), None
        return _fail(conn, f"unknown command '{command}'"), None

    def _finish(self, conn: socket.socket, callback: Callable | None, *args: object) -> bytes:
        if callback is not None:
            try:
                error = callback(*args)
            except Exception as e:  # the client is told; the server keeps serving
                error = str(e) or type(e).__name__
            if error:
                return _fail(conn, str(error))
        return _okay()

    def _getvar(self, conn: socket.socket, name: str) -> bytes:
        if name == "all":
            for key, value in self.variables.items():
                _send(conn, _payload(b"INFO", f"{key}: {value}"))
            return _okay()
        value = self.variables.get(name)
        if value is None and name.startswith("has-slot:"):
            value = "no"
        if value is None:
            return _fail(conn, f"unknown variable '{name}'")
        return _okay(value)

    def _oem(self, conn: socket.socket, args: str) -> bytes:
        if self.on_oem is None:
            return _fail(conn, f"unknown command 'oem {args}'")
        try:
            lines = self.on_oem(args)
        except Exception as e:
            return _fail(conn, str(e) or type(e).__name__)
        if lines is None:
            return _fail(conn, f"unknown command 'oem {args}'")
        for line in lines:
            _send(conn, _payload(b"INFO", line))
        return _okay()

    def _download(self, conn: socket.socket, arg: str) -> tuple[bytes, str | None]:
        try:
            size = int(arg, 16)
        except ValueError:
            return _fail(conn, f"download: size '{arg}' is not hex (download:%08x)"), None
        limit = int(self.variables.get("max-download-size", "0"), 0) or DEFAULT_MAX_DOWNLOAD
        if not 0 < size <= limit:
            return _fail(conn, f"download: {size} bytes, max-download-size is {limit}"), None
        self._downloads += 1
        path = self.workdir / f"download-{self._downloads}.img"
        # one staged download at a time, as in device RAM: the previous one goes first (the
        # disk holds at most one max-download-size image); a failed download leaves nothing
        if self._staged is not None:
            self._staged.unlink(missing_ok=True)
        self._staged = None
        try:
            fd = create_private(path)
        except OSError as e:  # something already there (planted?): never written through
            return _fail(conn, f"download: cannot create {path.name}: {e.strerror}"), None
        _send(conn, _payload(b"DATA", f"{size:08x}"))
        # one frame per download from fastboot 29.0.6, but any split is accepted
        received = 0
        try:
            with os.fdopen(fd, "wb") as f:
                while received < size:
                    try:
                        (length,) = struct.unpack(">Q", _recv_exact(conn, 8))
                        if length > size - received:
                            raise _ProtocolError(
                                f"download: a {length}-byte frame with {size - received} of "
                                f"{size} bytes outstanding"
                            )
                        while length:
                            chunk = conn.recv(min(length, 1 << 20))
                            if not chunk:
                                raise ConnectionResetError
                            f.write(chunk)
                            received += len(chunk)
                            length -= len(chunk)
                    except (_Disconnected, ConnectionError):
                        raise _Disconnected(f"after {received} of {size} bytes") from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._staged = path
        return _okay(), str(path)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = conn.recv(min(n - len(buf), 1 << 20))
        except ConnectionError as e:  # a killed client often resets rather than closes
            raise _Disconnected(f"connection reset with {n - len(buf)} bytes outstanding") from e
        if not chunk:
            raise _Disconnected(f"connection closed with {n - len(buf)} bytes outstanding")
        buf += chunk
    return bytes(buf)


def _recv_frame(conn: socket.socket, limit: int) -> bytes:
    """One framed message; clean EOF before a header is _Disconnected too."""
    (length,) = struct.unpack(">Q", _recv_exact(conn, 8))
    if length > limit:
        raise _ProtocolError(f"message of {length} bytes where at most {limit} fit")
    return _recv_exact(conn, length)


def _payload(kind: bytes, text: str = "") -> bytes:
    return (kind + text.encode("ascii", "replace"))[:RESPONSE_MAX]


def _send(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(struct.pack(">Q", len(payload)) + payload)


def _okay(text: str = "") -> bytes:
    return _payload(b"OKAY", text)


def _fail(conn: socket.socket, message: str) -> bytes:
    """FAIL with the first line; a longer story goes first as INFO lines the client prints."""
    lines = [line for line in message.splitlines() if line.strip()] or ["failed"]
    if len(lines) > 1 or len(lines[0]) > MESSAGE_MAX:
        for line in lines:
            for i in range(0, len(line), MESSAGE_MAX):
                _send(conn, _payload(b"INFO", line[i : i + MESSAGE_MAX]))
    return _payload(b"FAIL", lines[0][:MESSAGE_MAX])
