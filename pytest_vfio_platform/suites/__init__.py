"""The HIL suites, shipped with the plugin: `pytest --lab=qemu --pyargs pytest_vfio_platform.suites`
runs them from an installed wheel as from a clone (`pytest --lab=qemu pytest_vfio_platform/suites`)."""
