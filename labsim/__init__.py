"""The lab simulator: a labgrid rack on this machine (QEMU boards behind a board host with a
power relay, a fastboot server and ptys as their serial lines), for the project's own tests
and for `python -m labsim.local up`. It plays the hardware a lab has and this machine does
not; the product (pytest_vfio_platform) never imports it.
"""
