"""The fault suite: faults injected on purpose, each case recorded with `fault_recorder`
(tests/support/faults.py) so the run ends with cases tried / survived / lost data per
fault class. `pytest -m faults` runs only this suite."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: fault-injection cases, summarised per fault class at the end"
    )
