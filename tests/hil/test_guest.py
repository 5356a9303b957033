"""A KVM guest on the board owns the devices: UART both ways, GPIO edges, RTC alarm and time,
ID registers — checked from inside the guest over its own console, stimulated from outside
the board. One guest boot serves the whole module (all inventory devices assigned at once).

On a kernel without the change the devices cannot be given to the guest: every test fails
with the kernel's refusal.
"""

import dataclasses
import hashlib
import os
import re
import time

import pytest

from pytest_vfio_platform import vfio
from pytest_vfio_platform.guest import slots
from pytest_vfio_platform.guest.qemu import QemuGuest

pytestmark = [pytest.mark.hil, pytest.mark.guest, pytest.mark.variant("guest")]


def as_platform(lab):
    """In the guest variant every assignable device is a platform device (QEMU's
    vfio-platform takes nothing else)."""
    return [dataclasses.replace(d, bus="platform", host_driver=None) for d in lab.devices]


@pytest.fixture(scope="module")
def guest(lab_session):
    board = lab_session.board("guest")
    devices = as_platform(lab_session.lab)
    bindings = []
    try:
        for d in devices:
            b = vfio.bind(board, d.sysfs, d.bus)
            bindings.append(b)
            vfio.require_bound(b)
        g = QemuGuest(board, devices)
        g.start()
        yield g
        g.kill()
    finally:
        if not board.needs_reboot:
            for b in bindings:
                vfio.restore(board, b)


def by_class(lab, cls):
    for d in as_platform(lab):
        if d.cls == cls:
            return d
    pytest.skip(f"lab has no {cls} device")


def guest_irq_count(guest, pattern: str) -> int:
    for line in guest.check("cat /proc/interrupts").splitlines():
        if re.search(pattern, line):
            return sum(int(x) for x in line.split()[1:] if x.isdigit())
    raise AssertionError(f"no interrupt line matching {pattern!r} in the guest")


def test_guest_sees_assigned_devices_with_their_id_registers(board, guest, lab):
    for s in slots(guest.devices):
        d = s.device
        for name, (off, value) in d.id_registers.items():
            addrs = [s.guest_base + off + 4 * i for i in range(4)]
            regs = [int(guest.check(f"devmem {a:#x} 32"), 16) & 0xFF for a in addrs]
            got = sum(b << (8 * i) for i, b in enumerate(regs))
            assert got == value, (
                f"{d.name} {name} in the guest: {got:#010x}, inventory {value:#010x}"
            )


def test_uart_guest_to_outside_and_back(board, guest, lab):
    uart = by_class(lab, "uart")
    tty = "/dev/ttyAMA1"
    guest.check(f"stty -F {tty} raw -echo 115200")
    irq0 = guest_irq_count(guest, r"pl011|uart-pl011|ttyAMA1")
    peer = board.uart_peer(uart.stimulus.socket)
    try:
        # guest -> outside: 64 KiB of random bytes, compared by digest
        guest.check("head -c 65536 /dev/urandom > /tmp/tx && md5sum /tmp/tx")
        want = guest.check("md5sum /tmp/tx").split()[0]
        guest.check(f"cat /tmp/tx > {tty}", timeout=120)
        got = peer.recv_exactly(65536, timeout=60)
        assert len(got) == 65536, f"{len(got)} of 65536 bytes arrived outside the board"
        assert hashlib.md5(got).hexdigest() == want, "payload corrupted on the way out"
        # outside -> guest: the RX interrupt path
        payload = os.urandom(65536)
        guest.check(f"(head -c 65536 {tty} > /tmp/rx; echo done > /tmp/rx.done) > /dev/null 2>&1 &")
        time.sleep(0.3)
        peer.send(payload)
        # one interrupt per byte (QEMU's PL011 RX trigger level is 1): the guest is too busy
        # to answer its console for tens of seconds; wait_for rides that out
        guest.wait_for("test -e /tmp/rx.done", timeout=300)
        size = int(guest.check("wc -c < /tmp/rx").strip())
        assert size == 65536, f"guest read {size} of 65536 bytes"
        assert guest.check("md5sum /tmp/rx").split()[0] == hashlib.md5(payload).hexdigest()
    finally:
        peer.close()
    assert guest_irq_count(guest, r"pl011|uart-pl011|ttyAMA1") > irq0, (
        "no UART interrupt counted in the guest"
    )


def test_gpio_power_key_edges_counted_once_per_pulse(board, guest, lab):
    gpio = by_class(lab, "gpio")
    dev = guest.check(
        "for e in /sys/class/input/event*; do grep -l assigned-gpio-keys $e/device/name >/dev/null && echo ${e##*/}; done"
    ).split()
    assert dev, "no input device for the assigned GPIO block's keys in the guest"
    guest.check(f"(cat /dev/input/{dev[0]} > /tmp/ev &) ; sleep 0.2")
    pulses = 20
    for _ in range(pulses):
        board.press_power_button()  # the PL061 power line (3) pulses for 100 ms
        time.sleep(0.35)
    time.sleep(0.5)
    guest.check("kill $(pidof cat) 2>/dev/null; true")
    raw = bytes.fromhex("".join(guest.check("od -An -v -tx1 /tmp/ev").split()))
    events = [raw[i : i + 24] for i in range(0, len(raw) - len(raw) % 24, 24)]
    presses = sum(
        1
        for e in events
        if int.from_bytes(e[16:18], "little") == 1
        and int.from_bytes(e[18:20], "little") == 116
        and int.from_bytes(e[20:24], "little") == 1
    )
    assert presses == pulses, (
        f"{presses} KEY_POWER presses in the guest for {pulses} pulses on line {gpio.stimulus.line}"
    )


def test_rtc_time_tracks_outside_and_alarm_fires(board, guest, lab):
    by_class(lab, "rtc")
    t_guest = int(guest.check("cat /sys/class/rtc/rtc0/since_epoch"))
    assert abs(t_guest - time.time()) < 10, f"guest RTC {t_guest} vs outside {time.time():.0f}"
    irq0 = guest_irq_count(guest, r"pl031|rtc-pl031")
    guest.check("echo 0 > /sys/class/rtc/rtc0/wakealarm; echo +2 > /sys/class/rtc/rtc0/wakealarm")
    alarm = int(guest.check("cat /sys/class/rtc/rtc0/wakealarm"))
    # Wall-clock bounds are not the point (two nested boards on two cores stretch every
    # poll): the interrupt must arrive, and only once the RTC has reached the match value.
    t0 = time.monotonic()
    fired = None
    while time.monotonic() - t0 < 30:
        if guest_irq_count(guest, r"pl031|rtc-pl031") > irq0:
            fired = int(guest.check("cat /sys/class/rtc/rtc0/since_epoch"))
            break
        time.sleep(0.2)
    assert fired is not None, "the RTC alarm interrupt never arrived in the guest"
    assert fired >= alarm, f"the alarm for {alarm} fired at RTC time {fired}: early"
