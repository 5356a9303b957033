"""Shared by every suite under tests/.

The fault recorder (`fault_recorder` fixture, the fault table at the end of a run) is a plugin
module loaded here rather than from tests/faults/conftest.py: a pytest-xdist controller only
imports the conftests at the top of the run, and it is the controller that prints the table.
"""

pytest_plugins = ["tests.support.faults"]
