"""The report step's tests: ci/report against real Allure results."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "browser: opens the generated report in headless Chromium (skipped without `chromium`)",
    )
