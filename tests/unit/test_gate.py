"""The gate's verdict: regressions are product failures that pass on the baseline; lab
trouble is never blamed on the kernel and never hides a regression."""

from pytest_vfio_platform.classify import allure_categories, classify
from pytest_vfio_platform.gate import (
    INFRASTRUCTURE,
    PASS,
    REGRESSION,
    Result,
    decide,
    read_junit,
    write_junit,
)

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.hil.test_host_assign" name="test_bind[uart0]"/>
<testcase classname="tests.hil.test_host_assign" name="test_bind[gpio]"><failure message="AssertionError: vfio-platform did not bind">trace</failure></testcase>
<testcase classname="tests.hil.test_board" name="test_panic"><error message="failed on setup with &quot;pytest_vfio_platform.errors.BoardError: board 'qemu' did not reach a shell&quot;">x</error></testcase>
<testcase classname="tests.hil.test_guest" name="test_uart"><skipped message="no lab"/></testcase>
</testsuite></testsuites>"""


def r(outcome, msg=""):
    return Result("t", outcome, msg)


def test_classify():
    assert classify("failed", "AssertionError: vfio-platform did not bind") == "regression"
    assert (
        classify("error", "BoardError: board hung running 'x': no answer within 30s")
        == "infrastructure"
    )
    assert (
        classify("failed", "board hung running 'x': kernel crash: Kernel panic - not syncing")
        == "kernel-crash"
    )
    assert classify("error", "KeyError: 'regions'") == "test-error"
    assert classify("passed", "") == "passed"
    names = [c["name"] for c in allure_categories()]
    assert names == [
        "Kernel crash",
        "Lab/infrastructure failure",
        "Kernel regression",
        "Test error",
    ]


def test_read_junit(tmp_path):
    p = tmp_path / "j.xml"
    p.write_text(JUNIT)
    res = read_junit(p)
    assert res["tests/hil/test_host_assign.py::test_bind[uart0]"].outcome == "passed"
    assert res["tests/hil/test_host_assign.py::test_bind[gpio]"].cls == "regression"
    assert res["tests/hil/test_board.py::test_panic"].cls == "infrastructure"
    assert res["tests/hil/test_guest.py::test_uart"].outcome == "skipped"


def test_same_results_pass():
    base = {"a": Result("a", "passed"), "b": Result("b", "failed", "AssertionError")}
    v = decide(base, dict(base))
    assert v.code == PASS and v.still_failing == ["b"] and v.compared == 2


def test_pass_to_fail_is_regression_and_wins_over_lab_trouble():
    base = {"a": Result("a", "passed"), "b": Result("b", "passed")}
    cand = {
        "a": Result("a", "failed", "AssertionError: did not bind"),
        "b": Result("b", "error", "BoardError: board hung"),
    }
    v = decide(base, cand)
    assert v.code == REGRESSION and v.regressions == ["a"] and v.infrastructure == ["b"]


def test_lab_trouble_alone_is_infrastructure():
    base = {"a": Result("a", "passed")}
    cand = {"a": Result("a", "error", "BoardError: board 'qemu' did not reach a shell")}
    assert decide(base, cand).code == INFRASTRUCTURE


def test_fixed_by_candidate_passes():
    base = {"a": Result("a", "failed", "AssertionError")}
    v = decide(base, {"a": Result("a", "passed")})
    assert v.code == PASS and v.fixed == ["a"]


def test_junit_output(tmp_path):
    base = {"t.py::a": Result("t.py::a", "passed"), "t.py::b": Result("t.py::b", "passed")}
    cand = {
        "t.py::a": Result("t.py::a", "failed", "AssertionError: x"),
        "t.py::b": Result("t.py::b", "error", "BoardError: y"),
    }
    v = decide(base, cand)
    out = tmp_path / "gate.xml"
    write_junit(out, v, base, cand, "patched", "stock")
    text = out.read_text()
    assert 'failures="1"' in text and 'errors="1"' in text and 'value="REGRESSION"' in text
    assert "passes on patched, fails on stock" in text


def test_passed_then_skipped_by_the_kernel_is_a_regression_with_its_reason():
    base = {"a": Result("a", "passed"), "b": Result("b", "passed")}
    cand = {"a": Result("a", "skipped", "no /dev/kvm on the board"), "b": Result("b", "passed")}
    v = decide(base, cand)
    assert v.code == REGRESSION and v.regressions == ["a"]
    assert "skipped on the candidate: no /dev/kvm" in v.summary("p", "c", base, cand)


def test_passed_then_skipped_offline_is_infrastructure_never_pass():
    base = {"a": Result("a", "passed"), "b": Result("b", "passed")}
    off = "board qemu/main: OFFLINE — does not boot: board 'qemu' did not reach a shell"
    cand = {n: Result(n, "skipped", off) for n in base}
    v = decide(base, cand)
    assert v.code == INFRASTRUCTURE and v.infrastructure == ["a", "b"]
    assert v.errors and "nothing was checked" in v.errors[0]
    assert "OFFLINE" in v.summary("p", "c", base, cand)


def test_passed_then_missing_is_infrastructure():
    base = {"a": Result("a", "passed"), "b": Result("b", "passed")}
    cand = {"a": Result("a", "passed")}
    v = decide(base, cand)
    assert v.code == INFRASTRUCTURE and v.infrastructure == ["b"]
    assert "not run on the candidate" in v.why["b"]
    assert "candidate ran 1 tests, the baseline 2" in v.errors[0]


def test_nothing_compared_is_never_pass():
    assert decide({}, {}).code == INFRASTRUCTURE
    skipped = {"a": Result("a", "skipped", "no lab")}
    v = decide(skipped, dict(skipped))
    assert v.code == INFRASTRUCTURE and v.compared == 0 and v.errors


def test_unsound_comparison_is_an_error_in_junit(tmp_path):
    base = {"t.py::a": Result("t.py::a", "passed")}
    v = decide(base, {})
    out = tmp_path / "gate.xml"
    write_junit(out, v, base, {}, "patched", "cand")
    text = out.read_text()
    assert 'value="INFRASTRUCTURE"' in text and 'name="comparison"' in text
    assert "not run on the candidate" in text
