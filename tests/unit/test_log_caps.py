"""Logs are bounded on a shared host: a board that prints without end, a fastboot client that
sends commands without end, QEMU restarted without end — none fills the disk."""

from labsim.fastbootd import FastbootServer, rotate
from pytest_vfio_platform.console import ConsoleRecorder
from pytest_vfio_platform.private import private_dir


def test_the_console_log_stops_at_its_cap_with_a_marker(tmp_path):
    log = tmp_path / "console.log"
    rec = ConsoleRecorder(log, object(), limit=1000)
    try:
        for _ in range(50):
            rec.write(b"x" * 64)
        rec.mark("after the cap")
    finally:
        rec.close()
    data = log.read_bytes()
    assert data.startswith(b"x" * 1000)
    assert data.endswith(b"===== console log capped at 1000 bytes =====\n")
    assert len(data) < 1100 and b"after the cap" not in data


def test_a_recorder_reopening_a_full_log_adds_nothing(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"y" * 2000)
    rec = ConsoleRecorder(log, object(), limit=1000)
    rec.write(b"more")
    rec.close()
    assert log.read_bytes().count(b"capped") == 1 and b"more" not in log.read_bytes()


def test_a_log_past_its_limit_is_rotated_keeping_one_previous(tmp_path):
    log = tmp_path / "qemu.log"
    for i in range(3):
        log.write_bytes(bytes([65 + i]) * 200)
        rotate(log, 100)
    assert not log.exists()
    assert (tmp_path / "qemu.log.1").read_bytes() == b"C" * 200
    assert [p.name for p in tmp_path.iterdir()] == ["qemu.log.1"]


def test_fastboot_keeps_a_bounded_record_and_log(tmp_path, monkeypatch):
    import labsim.fastbootd as fb

    monkeypatch.setattr(fb, "RECORDS_KEPT", 5)
    monkeypatch.setattr(fb, "LOG_LIMIT", 300)
    srv = FastbootServer(workdir=private_dir(tmp_path / "dev"))
    for i in range(40):
        srv._record(fb.Record(float(i), "peer", f"getvar:v{i}", "OKAY"))
    assert [r.command for r in srv.records] == [f"getvar:v{i}" for i in range(35, 40)]
    sizes = [p.stat().st_size for p in (tmp_path / "dev").glob(fb.LOG_NAME + "*")]
    assert sum(sizes) < 2 * 300 + 200
