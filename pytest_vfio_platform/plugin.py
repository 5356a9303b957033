"""pytest glue: options, fixtures, markers. No logic of its own: everything it calls lives in
lab / provision / board / vfio, where the unit tests pin it."""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import report, vfio
from .boards import board_class
from .errors import VfioPlatformError
from .images.cache import ArtifactCache
from .lab import LAB_PATH_ENV, Lab, available_labs, load, with_place
from .session import LabSession, TestEvidence

LAB_KEY = pytest.StashKey[Lab | None]()
SESSION_KEY = pytest.StashKey[LabSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("vfio-platform", "VFIO platform HIL tests")
    g.addoption(
        "--lab",
        metavar="NAME|PATH",
        help=f"lab to run HIL tests on: a name ({', '.join(available_labs())}, shipped with "
        "the plugin, or one in a --lab-dir) or a lab YAML path; without it HIL tests are "
        "skipped. The suites: --pyargs pytest_vfio_platform.suites",
    )
    g.addoption(
        "--lab-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="also look up lab names in DIR (repeatable; searched before the shipped labs, "
        "so a lab there may shadow one of them; $VFIO_LAB_PATH works the same way)",
    )
    g.addoption(
        "--kernel",
        default="patched",
        metavar="patched|stock|PATH",
        help="board kernel: 'patched' (with kernel/patches, default), 'stock' (same tree "
        "and config, no patches: the baseline) or a prebuilt arm64 Image",
    )
    g.addoption(
        "--kernel-src",
        metavar="PATH",
        help="kernel source to build from: a tree or tarball (default: Debian's "
        "/usr/src/linux-source-6.12.tar.xz)",
    )
    g.addoption(
        "--kernel-patches",
        metavar="DIR",
        help="build the patched kernel with DIR/*.patch (in name order) instead of the "
        "shipped series: a series under review, or a mutant (ci/mutate)",
    )
    g.addoption(
        "--place",
        metavar="NAME|TAG=VALUE[,...]",
        help="rack labs: which place to reserve, by name or by tags (default: the lab's "
        "rack.tags); e.g. --place board-2 or --place soc=gs101,board=pixel6",
    )
    g.addoption(
        "--lab-health",
        action="store_true",
        help="check each board first (boots, console answers, KVM and VFIO drivers present); "
        "an unhealthy board is reported offline and its tests are skipped",
    )
    g.addoption(
        "--guest-uart-bytes",
        type=int,
        default=4096,
        metavar="N",
        help="bytes sent each way through the guest's UART (default 4096: proves integrity "
        "and the RX interrupt path in seconds; QEMU's PL011 takes one interrupt per "
        "received byte, so 65536 costs minutes on a loaded machine — a soak setting)",
    )
    g.addoption(
        "--cache-dir",
        metavar="DIR",
        help="artifact cache (kernels, initramfs, DTBs, ccache); default "
        "$PYTEST_VFIO_PLATFORM_CACHE or ~/.cache/pytest-vfio-platform",
    )
    g.addoption(
        "--run-dir",
        metavar="DIR",
        help="where console logs and labgrid configs of this run go "
        "(default: vfio-runs/<time>-<run id> under the current directory)",
    )


def default_run_dir(now: float | None = None) -> Path:
    """vfio-runs/<time>-<run id>: two sessions started in the same second get their own
    directories (sockets, logs, the sweep's key). xdist workers share their controller's run
    id (PYTEST_XDIST_TESTRUNUID) so one run's workers sit side by side under one directory."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")[:8] or secrets.token_hex(4)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return Path("vfio-runs") / f"{stamp}-{run_id}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hil: needs a board from --lab (skipped without it)")
    config.addinivalue_line("markers", "variant(name): boot the board into this lab variant")
    config.addinivalue_line("markers", "guest: runs inside an L2 guest on the board")
    if report.attach_json not in vfio.agent_observers:  # every agent result is evidence
        vfio.agent_observers.append(report.attach_json)
    if config.getoption("cache_dir"):
        os.environ["PYTEST_VFIO_PLATFORM_CACHE"] = str(
            Path(config.getoption("cache_dir")).resolve()
        )
    if config.getoption("lab_dir"):  # through the environment, so xdist workers, the rack
        # tools and `inherit:` all see the same search path
        dirs = [str(Path(d).resolve()) for d in config.getoption("lab_dir")]
        old = os.environ.get(LAB_PATH_ENV, "")
        os.environ[LAB_PATH_ENV] = os.pathsep.join([*dirs, *([old] if old else [])])
    lab_opt = config.getoption("lab")
    lab = None
    if lab_opt:
        try:
            lab = load(lab_opt)
            if config.getoption("place"):
                lab = with_place(lab, config.getoption("place"))
            board_class(lab)  # a board kind that cannot be loaded stops the run here
            from .provision import KernelChoice

            choice = KernelChoice.parse(
                config.getoption("kernel"),
                config.getoption("kernel_src"),
                config.getoption("kernel_patches"),
            )
        except VfioPlatformError as e:
            raise pytest.UsageError(str(e)) from None
        rundir = config.getoption("run_dir")
        run_path = Path(rundir) if rundir else default_run_dir()
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        if worker:  # pytest-xdist: one board (place) per worker, each with its own logs
            run_path = run_path / worker
        session = LabSession(lab, choice, run_path.resolve(), ArtifactCache())
        session.say = _sayer(config, session.rundir)
        config.stash[SESSION_KEY] = session
        _terminate_like_interrupt()
    config.stash[LAB_KEY] = lab


def _sayer(config: pytest.Config, rundir: Path):  # noqa: ANN202
    """Messages a user must see while a test waits (a busy rack): on the terminal even while
    output is captured, and in the run directory (an xdist worker has no terminal)."""

    def say(msg: str) -> None:
        rundir.mkdir(parents=True, exist_ok=True)
        with open(rundir / "session.log", "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
        tr = config.pluginmanager.get_plugin("terminalreporter")
        capman = config.pluginmanager.get_plugin("capturemanager")
        if tr is None or os.environ.get("PYTEST_XDIST_WORKER"):
            return
        if capman is not None:
            with capman.global_and_fixture_disabled():
                tr.write_line(f"vfio-platform: {msg}")
        else:
            tr.write_line(f"vfio-platform: {msg}")

    return say


def _terminate_like_interrupt() -> None:
    """SIGTERM (a CI timeout, a lab scheduler) ends the run the way Ctrl-C does, so the
    session's cleanup runs: boards powered off, no QEMU left behind, places released."""

    def handler(signum: int, frame: object) -> None:  # noqa: ARG001
        raise KeyboardInterrupt(f"terminated by signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        return ["vfio-platform: no --lab given, HIL tests will be skipped"]
    return [
        f"vfio-platform: lab {session.lab.name} ({session.lab.path}), kernel {session.choice.label}, "
        f"run dir {session.rundir}"
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize over the lab inventory: `device` and `refused_device` fixtures."""
    lab = metafunc.config.stash.get(LAB_KEY, None)
    for name, items in (("device", "devices"), ("refused_device", "refused")):
        if name not in metafunc.fixturenames:
            continue
        if lab is None:
            metafunc.parametrize(name, [pytest.param(None, id="no-lab")])
            continue
        params = []
        for d in getattr(lab, items):
            marks = [pytest.mark.variant(d.variant)] if d.variant != "default" else []
            params.append(pytest.param(d, id=d.name, marks=marks))
        if not params:
            params = [
                pytest.param(None, id="none", marks=pytest.mark.skip(reason=f"lab has no {items}"))
            ]
        metafunc.parametrize(name, params)


def variant_of(item: pytest.Item) -> str:
    """The lab variant a test runs on (its `variant` marker)."""
    m = item.get_closest_marker("variant")
    return m.args[0] if m else "default"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip HIL tests without a lab; otherwise order them by board variant (fewer reboots)."""
    lab = config.stash.get(LAB_KEY, None)
    hil = [i for i in items if i.get_closest_marker("hil")]
    if lab is None:
        skip = pytest.mark.skip(reason="no --lab given: HIL tests need a board (pytest --lab=qemu)")
        for i in hil:
            i.add_marker(skip)
        return
    order = {v: n for n, v in enumerate(lab.variants)}
    items.sort(
        key=lambda i: (1, order.get(variant_of(i), 99)) if i.get_closest_marker("hil") else (0, 0)
    )
    if config.getoption("lab_health") and hil:
        from .health import check

        health = check(config.stash[SESSION_KEY])
        config.stash[HEALTH_KEY] = health
        if not health.ok:
            skip = pytest.mark.skip(reason=health.line())
            for i in hil:
                i.add_marker(skip)


HEALTH_KEY = pytest.StashKey[object]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    health = terminalreporter.config.stash.get(HEALTH_KEY, None)
    if health is not None:
        terminalreporter.write_sep("-", "lab health")
        terminalreporter.write_line(health.line())
        if not health.ok:
            terminalreporter.write_line(
                "lab health: the board is offline; its tests did not run, so this run is not a "
                "pass (exit 1)",
                red=True,
            )


@pytest.fixture(scope="session")
def lab_session(request: pytest.FixtureRequest) -> LabSession:
    session = request.config.stash.get(SESSION_KEY, None)
    if session is None:
        pytest.skip("no --lab given")
    return session


@pytest.fixture(scope="session")
def lab(lab_session: LabSession) -> Lab:
    return lab_session.lab


@pytest.fixture
def board(lab_session: LabSession, request: pytest.FixtureRequest) -> Iterator:
    """The lab's board booted into the test's variant (marker), with per-test evidence:
    console slice, dmesg delta, taint before/after."""
    failure = None
    try:
        b = lab_session.board(variant_of(request.node))
    except VfioPlatformError as e:
        failure = str(e)
    if failure is not None:  # outside the except: no "during handling of" echo of the same text
        pytest.fail(failure, pytrace=False)
    ev = TestEvidence.start(b, request.node.nodeid)
    request.node.stash[EVIDENCE_KEY] = ev
    params = getattr(request.node, "callspec", None)
    dev = params.params.get("device") or params.params.get("refused_device") if params else None
    story = (
        request.node.originalname if hasattr(request.node, "originalname") else request.node.name
    )
    report.label_test(lab_session.lab.name, getattr(dev, "cls", None), story)
    yield b
    ev.finish(b)


EVIDENCE_KEY = pytest.StashKey[TestEvidence]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    rep = yield
    ev = item.stash.get(EVIDENCE_KEY, None)
    # Evidence is collected when the test body ends (or its setup fails), before teardown
    # runs: teardown may reboot the board or restore devices and change what there is to see.
    if ev is not None and (rep.when == "call" or (rep.when == "setup" and rep.failed)):
        dmesg, console, guest = ev.dmesg_now(), ev.console_text(), ev.guest_console_text()
        report.attach_text("board console (this test)", console)
        report.attach_text("dmesg (this test)", dmesg)
        report.attach_text("guest console (this test)", guest)
        if rep.failed:
            rep.sections.append(("board dmesg (this test)", dmesg))
            rep.sections.append(("board console (this test)", console))
            if guest:
                rep.sections.append(("guest console (this test)", guest))
            rep.sections.append(("board console log", ev.board_log))
    return rep


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An offline board fails the run (its tests were skipped, not passed); then
    environment.properties and categories.json into the Allure results directory."""
    health = session.config.stash.get(HEALTH_KEY, None)
    if health is not None and not health.ok and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    alluredir = getattr(session.config.option, "allure_report_dir", None)
    lab_session = session.config.stash.get(SESSION_KEY, None)
    if not alluredir or lab_session is None:
        return
    release = next((f.kernel_release for f in lab_session.booted_files()), "")
    env = report.environment(
        lab_session.lab.name, lab_session.choice.label, release, lab_session.boards_used()
    )
    report.write_run_metadata(Path(alluredir), env)
