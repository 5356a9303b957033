"""Reset on release: a user that set its device up and died with SIGKILL leaves nothing to
the next owner: interrupts masked and cleared, the block disabled, GPIO lines back to
inputs, none of its bytes in the UART, the RTC's match off and its counter still the wall
clock. The kernel's reset does this (on the last close and again on the next open), not the
user's cooperation. What "dirty" and "reset" mean per device is the lab's `reset:` entry.

What the dead user left is read through /dev/mem (busybox devmem), before anyone opens the
device again: an open resets it too, so reads through VFIO alone could not tell the two
paths apart. The board kernel has CONFIG_DEVMEM for this.

The noiommu baseline (generic vfio-platform with reset_required=0, as used today) runs the
same user and must show the stale state: the proof that the dirty set-up takes and that the
reads would see it.
"""

import re
import shlex
import time

import pytest

from pytest_vfio_platform import vfio

pytestmark = pytest.mark.hil

READY, PID = "/tmp/hold.ready", "/tmp/hold.pid"


def reset_spec(device):
    if device.reset is None:
        pytest.fail(
            f"{device.name}: the lab gives no `reset:` (dirty set-up and reset values) for an "
            "assignable device, so nothing checks what its next owner inherits",
            pytrace=False,
        )
    return device.reset


def read_regs(board, b: vfio.Binding, path: str, offsets: list[int]) -> dict[int, int]:
    res = vfio.agent(
        board, "read", *vfio.selector(b, path), "--region", "0",
        "--offset", ",".join(hex(o) for o in offsets), "--via", "pread",
    )  # fmt: skip
    assert res.get("ok"), f"the next owner could not read {b.device}: {res.get('error')}"
    return {o: int(v["value"], 16) for o, v in zip(offsets, res["values"], strict=True)}


def devmem_read(board, device, offsets: list[int]) -> dict[int, int]:
    """The registers as they are, without a VFIO open."""
    board.check(
        "test -c /dev/mem || { echo 'the board kernel has no /dev/mem (CONFIG_DEVMEM)'; exit 1; }"
    )
    out = board.check("; ".join(f"devmem {device.mmio_base + o:#x} 32" for o in offsets))
    return {o: int(v, 16) for o, v in zip(offsets, out.split(), strict=True)}


def devmem_dirty(board, device, ops: str) -> None:
    """Apply `w:OFF=VAL` ops straight to the registers (a previous owner outside VFIO)."""
    cmds = []
    for op in ops.split(","):
        kind, _, rest = op.partition(":")
        off, _, val = rest.partition("=")
        assert kind == "w" and val, f"reset.dirty op {op!r}: only w:OFF=VAL can be replayed"
        cmds.append(f"devmem {device.mmio_base + int(off, 0):#x} 32 {int(val, 0):#x}")
    board.check("; ".join(cmds))


def stale(got: dict[int, int], spec) -> list[str]:
    return [
        f"{off:#x}: {got[off] & mask:#x} (mask {mask:#x}), want {value:#x}"
        for off, mask, value in spec.expect
        if got[off] & mask != value
    ]


def resets(lines: list[str], dev: str) -> list[str]:
    return [ln for ln in lines if re.search(rf"{re.escape(dev)}: (VFIO: )?reset$", ln.strip())]


def uptime(board) -> float:
    return float(board.check("cut -d' ' -f1 /proc/uptime").strip())


def die_holding(board, b: vfio.Binding, path: str, dirty: str) -> None:
    """A user that opens the device, arms its interrupt, leaves it dirty, and is SIGKILLed
    while it holds it."""
    args = [*vfio.selector(b, path), "--index", "0", "--hold", "--setup", dirty]
    args += ["--ready-file", READY]
    board.check(f"rm -f {READY}; (vfio-agent irq {shlex.join(args)} >/tmp/hold.json 2>&1 &"
                f" echo $! > {PID})")  # fmt: skip
    end = time.monotonic() + 20
    while board.run(f"test -e {READY}").rc != 0:
        if time.monotonic() > end:
            pytest.fail(f"the holding user never got ready: {board.run('cat /tmp/hold.json').out}")
        time.sleep(0.1)
    pid = board.check(f"cat {PID}").strip()
    assert board.run(f"kill -0 {pid}").rc == 0, (
        f"the holding user exited by itself, so it did not die holding the device: "
        f"{board.run('cat /tmp/hold.json').out}"
    )
    board.check(f"kill -9 {pid}; n=0; while kill -0 {pid} 2>/dev/null && [ $n -lt 100 ]; "
                "do sleep 0.1; n=$((n+1)); done; ! kill -0 " + pid)  # fmt: skip


def test_sigkill_resets_device(board, device, assign):
    spec = reset_spec(device)
    b = assign(device.sysfs, device.bus)
    vfio.require_bound(b)
    offsets = [o for o, _, _ in spec.expect]
    if spec.clock is not None:
        start = read_regs(board, b, "group", [spec.clock])[spec.clock]
        t_start = uptime(board)
    n0 = int(board.check("dmesg | wc -l"))
    die_holding(board, b, "group", spec.dirty)
    new = board.check(f"dmesg | tail -n +{n0 + 1}").splitlines()
    failed = [ln for ln in new if "reset call failed" in ln or "reset: register" in ln]
    assert not failed, f"{b.device}: a reset failed: {failed}"
    assert len(resets(new, b.device)) == 2, (
        f"{b.device}: expected a reset on the holder's open and one on its death: {new}"
    )
    # what the death left, before anyone opens the device again
    wrong = stale(devmem_read(board, device, offsets), spec)
    assert not wrong, f"{b.device}: the dead user's state survived its death: " + "; ".join(wrong)
    # and what the next owner sees through VFIO
    got = read_regs(board, b, "group", offsets + ([spec.clock] if spec.clock is not None else []))
    wrong = stale(got, spec)
    assert not wrong, f"{b.device}: the next owner inherits state: " + "; ".join(wrong)
    if spec.clock is not None:
        elapsed = uptime(board) - t_start
        ran = got[spec.clock] - start
        assert elapsed - 2 <= ran <= elapsed + 2, (
            f"{b.device}: the counter at {spec.clock:#x} ran {ran} s in {elapsed:.1f} s: "
            "the reset did not give the wall clock back"
        )


@pytest.mark.variant("noiommu")
def test_without_reset_the_dead_users_state_survives(board, device, assign):
    """The control: generic vfio-platform with reset_required=0 resets nothing, so the same
    dead user's set-up is still there. If this ever reads clean, the dirty set-up does not
    take and the reset test above proves nothing."""
    spec = reset_spec(device)
    b = assign(device.sysfs, device.bus)
    vfio.require_bound(b)
    die_holding(board, b, "noiommu", spec.dirty)
    got = devmem_read(board, device, [o for o, _, _ in spec.expect])
    assert stale(got, spec), f"{b.device}: no stale register without a reset: {got}"


def test_open_resets_what_a_previous_owner_left(board, device, assign):
    """The open path: a device bound to the VFIO driver but left dirty by someone before
    (written straight to its registers here) is reset before the first VFIO user sees it."""
    spec = reset_spec(device)
    b = assign(device.sysfs, device.bus)
    vfio.require_bound(b)
    offsets = [o for o, _, _ in spec.expect]
    devmem_dirty(board, device, spec.dirty)
    assert stale(devmem_read(board, device, offsets), spec), "the dirty set-up did not take"
    wrong = stale(read_regs(board, b, "group", offsets), spec)
    assert not wrong, f"{b.device}: the first VFIO user sees the previous state: {wrong}"
