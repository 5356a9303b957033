"""ci/mutate's verdict: only a test that FAILED in its call phase kills a mutant; a setup
error (a board that did not boot, a timeout) is a broken lab, never a kill."""

from pytest_vfio_platform import mutate

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" tests="3">
<testcase classname="suites.test_refusal" name="test_a[flash]"><failure message="x"/></testcase>
<testcase classname="suites.test_reset" name="test_b[uart0]"><error message="boot"/></testcase>
<testcase classname="suites.test_reset" name="test_c[gpio]"/>
</testsuite></testsuites>"""


def test_failures_and_errors_are_told_apart(tmp_path):
    p = tmp_path / "r.xml"
    p.write_text(JUNIT)
    assert mutate.junit_results(p) == (
        ["suites.test_refusal::test_a[flash]"],
        ["suites.test_reset::test_b[uart0]"],
    )


def test_no_report_means_nothing_failed(tmp_path):
    assert mutate.junit_results(tmp_path / "missing.xml") == ([], [])


def test_an_error_alone_is_not_a_kill(tmp_path, monkeypatch):
    m = mutate.MUTANTS[0]
    monkeypatch.setattr(mutate, "build_kernel", lambda *a, **k: None)
    monkeypatch.setattr(
        mutate, "run_suites", lambda *a, **k: (1, [], ["suites.test_reset::test_b[uart0]"])
    )
    o = mutate.run_mutant(m, tmp_path, "qemu", tmp_path, tmp_path, [])
    assert o.status == "error" and "not a kill" in o.by
    monkeypatch.setattr(mutate, "run_suites", lambda *a, **k: (1, ["t::x"], []))
    assert mutate.run_mutant(m, tmp_path, "qemu", tmp_path, tmp_path, []).status == "killed"
    monkeypatch.setattr(mutate, "run_suites", lambda *a, **k: (0, [], []))
    assert mutate.run_mutant(m, tmp_path, "qemu", tmp_path, tmp_path, []).status == "SURVIVED"


def test_a_run_that_judged_no_mutant_is_not_green(capsys, monkeypatch):
    """--only mutants no lab can reach: `mutants: 0, killed: 0` must not exit 0."""
    gap = mutate.Mutant("gap", "a branch no lab reaches", mutate.NODMA, (), unreachable="no lab")
    monkeypatch.setattr(mutate, "MUTANTS", (*mutate.MUTANTS, gap))
    assert mutate.main(["--only", "gap", "--no-baseline"]) == 1
    assert "no mutant ran" in capsys.readouterr().err


def test_every_shipped_mutant_runs_on_some_lab():
    """The ACPI rule is not a gap any more: it runs on the qemu-acpi lab."""
    assert not [m.name for m in mutate.MUTANTS if m.unreachable]
    acpi = next(m for m in mutate.MUTANTS if m.name == "acpi")
    assert acpi.lab == "qemu-acpi" and acpi.suites == ("test_refusal.py",)


def test_each_lab_a_mutant_runs_on_gets_a_baseline():
    chosen = [m for m in mutate.MUTANTS if m.name in ("acpi", "allowlist", "reset-skipped")]
    assert mutate.baselines(chosen, "qemu") == [
        ("qemu", mutate.SUITES),
        ("qemu-acpi", ("test_refusal.py",)),
    ]
    only_acpi = [m for m in mutate.MUTANTS if m.name == "acpi"]
    assert mutate.baselines(only_acpi, "qemu") == [("qemu-acpi", ("test_refusal.py",))]
