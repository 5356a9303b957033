"""Find the host tools the builders need, and say which package brings a missing one."""

from __future__ import annotations

import shutil

from ..errors import SetupError

# tool -> Debian package that provides it (what `ci/setup` installs)
PACKAGES: dict[str, str] = {
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "aarch64-linux-gnu-ld": "binutils-aarch64-linux-gnu",
    "aarch64-linux-gnu-readelf": "binutils-aarch64-linux-gnu",
    "make": "make",
    "flex": "flex",
    "bison": "bison",
    "bc": "bc",
    "cpio": "cpio",
    "ccache": "ccache",
    "dtc": "device-tree-compiler",
    "rsync": "rsync",
    "patch": "patch",
    "tar": "tar",
    "xz": "xz-utils",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
    "qemu-system-aarch64": "qemu-system-arm (from bookworm-backports)",
    "mkbootimg": "mkbootimg",
    "fastboot": "fastboot",
}


def require(tool: str) -> str:
    """Absolute path of tool, or a SetupError naming the package and the set-up script."""
    path = shutil.which(tool)
    if path:
        return path
    pkg = PACKAGES.get(tool, tool)
    raise SetupError(
        f"required tool '{tool}' not found on PATH; install the Debian package '{pkg}' "
        "(ci/setup installs everything the project needs)"
    )
