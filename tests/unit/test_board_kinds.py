"""board.type names a Board class: the shipped kinds by name, a lab's own as MODULE:CLASS,
so a new kind of board is one module plus its lab file (pytest_vfio_platform/boards.py)."""

from __future__ import annotations

import sys

import pytest

from pytest_vfio_platform.board import Board
from pytest_vfio_platform.boards import board_class, new_board
from pytest_vfio_platform.errors import LabError
from pytest_vfio_platform.lab import load
from pytest_vfio_platform.rack.board import RackBoard


def _lab(tmp_path, board_type: str):
    p = tmp_path / "kind.yaml"
    p.write_text(f"name: kind\ninherit: qemu\nboard: {{type: {board_type!r}}}\n")
    return load(str(p))


def test_shipped_kinds_by_name():
    assert board_class(load("qemu")) is Board
    assert board_class(load("local-rack")) is RackBoard


def test_a_kind_of_ones_own_is_one_module(tmp_path, monkeypatch):
    (tmp_path / "bench_board.py").write_text(
        "from pytest_vfio_platform.board import Board\n\n\n"
        "class BenchBoard(Board):\n"
        "    def name(self):\n"
        "        return 'bench/' + super().name()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    lab = _lab(tmp_path, "bench_board:BenchBoard")
    b = new_board(lab, tmp_path / "run")
    assert type(b).__name__ == "BenchBoard" and b.name() == "bench/kind/main"
    sys.modules.pop("bench_board", None)


@pytest.mark.parametrize(
    ("board_type", "why"),
    [
        ("no_such_module_here:X", r"board.type 'no_such_module_here:X': cannot import"),
        ("os.path:join", r"os.path has no Board subclass join"),
        ("pytest_vfio_platform.lab:Lab", r"no Board subclass Lab"),
    ],
)
def test_a_kind_that_cannot_be_loaded_says_what_and_where(tmp_path, board_type, why):
    lab = _lab(tmp_path, board_type)
    with pytest.raises(LabError, match=why) as e:
        board_class(lab)
    assert str(tmp_path / "kind.yaml") in str(e.value)


def test_a_board_type_of_no_known_shape_is_refused_at_load(tmp_path):
    with pytest.raises(LabError, match=r"board.type: expected one of qemu, rack or MODULE:CLASS"):
        _lab(tmp_path, "fastboot; rm -rf /")
