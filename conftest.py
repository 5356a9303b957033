"""Root conftest. The plugin itself is loaded through its pytest11 entry point
(pytest_vfio_platform.plugin), so installed users and this repository behave the same; this
file only keeps pytest out of directories that hold no tests of ours."""

collect_ignore = ["agent", "vfio-runs", "build", "allure-results"]
