"""The three rooms stay apart: the product package (plugin, builders, layers, suites, labs)
imports neither the lab simulator (labsim) nor the project's test support (tests/), so a
wheel of it is complete and a user's run carries no scaffolding."""

import ast
from pathlib import Path

import pytest

import pytest_vfio_platform
from pytest_vfio_platform import lab

PRODUCT = Path(pytest_vfio_platform.__file__).parent


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize(
    "path", sorted(PRODUCT.rglob("*.py")), ids=lambda p: str(p.relative_to(PRODUCT))
)
def test_product_module_imports_no_simulator_and_no_test_support(path):
    bad = {m for m in imported_modules(path) if m.split(".")[0] in ("labsim", "tests")}
    assert not bad, f"{path.relative_to(PRODUCT)} imports {sorted(bad)}"


def test_the_guard_sees_an_import_of_the_simulator(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from labsim.local import LocalRack\n")
    assert "labsim.local" in imported_modules(p)


def test_a_lab_dir_adds_names_and_may_shadow_a_shipped_lab(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("inherit: qemu\nname: mine\n")
    (tmp_path / "qemu.yaml").write_text("inherit: qemu\nname: qemu\n")
    monkeypatch.setenv(lab.LAB_PATH_ENV, str(tmp_path))
    assert {"mine", "qemu", "local-rack"} <= set(lab.available_labs())
    assert lab.resolve("mine") == tmp_path / "mine.yaml"
    assert lab.resolve("qemu") == tmp_path / "qemu.yaml"
    monkeypatch.delenv(lab.LAB_PATH_ENV)
    assert lab.resolve("qemu") == lab.LABS_DIR / "qemu.yaml"
    with pytest.raises(lab.LabError, match="unknown lab; available: .*looked in"):
        lab.resolve("mine")


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("vfio.py", {"report", "plugin"}),  # evidence goes through vfio.agent_observers
        ("guest/console.py", {"board", "plugin"}),
        ("shellrun.py", {"board", "report", "plugin"}),
    ],
)
def test_layers_below_do_not_import_layers_above(module, forbidden):
    src = ast.parse((PRODUCT / module).read_text())
    names = set()
    for node in ast.walk(src):
        if isinstance(node, ast.ImportFrom):
            mod = (node.module or "").split(".")[-1]
            names |= {mod} | {a.name for a in node.names}
    assert not names & forbidden, f"{module} imports {sorted(names & forbidden)}"
