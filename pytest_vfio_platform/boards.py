"""Board kinds: what a lab's `board.type` names, and the class that boots such a board.

Why a name that resolves to a class, not an if-chain in the session: a new kind of board (a
different VMM host, a vendor's flashing tool, a remote board farm) is one module with a
`Board` subclass plus `board: {type: "module:Class"}` in its lab file — nothing here
changes. The shipped kinds are names for the same thing.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import LabError
from .lab import BOARD_CLASS, Lab

if TYPE_CHECKING:
    from .board import Board

BUILTIN = {
    "qemu": "pytest_vfio_platform.board:Board",  # booted here by labgrid's QEMUDriver
    "rack": "pytest_vfio_platform.rack.board:RackBoard",  # a labgrid place (rack: section)
}


def board_class(lab: Lab) -> type[Board]:
    """The class for lab's board.type; LabError naming the lab file and what is wrong."""
    from .board import Board

    ref = BUILTIN.get(lab.board_type, lab.board_type)
    where = f"{lab.path}: board.type {lab.board_type!r}"
    if not BOARD_CLASS.fullmatch(ref):
        raise LabError(f"{where}: expected one of {', '.join(BUILTIN)} or MODULE:CLASS")
    module, _, name = ref.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise LabError(f"{where}: cannot import {module}: {e}") from None
    cls = getattr(mod, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Board)):
        raise LabError(
            f"{where}: {module} has no Board subclass {name} "
            f"(a board kind subclasses pytest_vfio_platform.board.Board)"
        )
    return cls


def new_board(lab: Lab, rundir: Path, say=print) -> Board:  # noqa: ANN001
    return board_class(lab).for_session(lab, rundir, say)
