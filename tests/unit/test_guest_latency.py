"""The latency figures: percentiles of what came back, misses apart, timed on one clock."""

import threading

from pytest_vfio_platform.guest.latency import Latency, round_trips


def test_summary_has_median_p95_and_misses():
    lat = Latency("x", samples=[i / 1000 for i in range(1, 101)], misses=2)
    assert lat.p(0.95) == 0.095
    assert lat.summary() == "x: median 50.5 ms, p95 95.0 ms over 100 samples, 2 missed"
    assert "no sample came back (3 sent)" in Latency("y", misses=3).summary()


class LoopPeer:
    """A peer whose far end answers some stimuli (the others are lost)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.cond = threading.Condition()

    def answer(self) -> None:
        with self.cond:
            self.buf += b"k"
            self.cond.notify_all()

    def take(self) -> bytes:
        with self.cond:
            b, self.buf = bytes(self.buf), bytearray()
            return b

    def recv_exactly(self, n: int, timeout: float) -> bytes:
        with self.cond:
            self.cond.wait_for(lambda: len(self.buf) >= n, timeout=timeout)
            b = bytes(self.buf[:n])
            del self.buf[:n]
            return b


def test_lost_answers_are_misses_and_late_ones_are_not_taken_for_the_next():
    peer = LoopPeer()

    def stim(i: int) -> None:
        if i % 2 == 0:
            threading.Timer(0.01, peer.answer).start()

    lat = round_trips("t", stim, peer, n=4, bound=0.1)
    assert (len(lat.samples), lat.misses) == (2, 2)
    assert all(0.005 < s < 0.1 for s in lat.samples)
