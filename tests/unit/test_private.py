"""Private state on a shared host: a directory someone else made, opened up, or planted as a
symlink is refused with a message; a predictable file name is never written through."""

import os

import pytest

from labsim.local import LocalRack
from pytest_vfio_platform.errors import SetupError
from pytest_vfio_platform.lab import load
from pytest_vfio_platform.private import create_private, private_dir

NOBODY = 65534


def test_a_new_directory_is_made_0700(tmp_path):
    d = private_dir(tmp_path / "a" / "rack")
    assert (os.stat(d).st_mode & 0o777) == 0o700


@pytest.mark.parametrize("plant", ["symlink", "open", "file", "someone-elses"])
def test_a_planted_directory_is_refused(tmp_path, plant):
    d = tmp_path / "rack"
    if plant == "symlink":
        (tmp_path / "theirs").mkdir(mode=0o700)
        d.symlink_to(tmp_path / "theirs")
    elif plant == "open":
        d.mkdir()
        d.chmod(0o777)
    elif plant == "file":
        d.write_text("")
    else:
        if os.getuid() != 0:
            pytest.fail("this case needs root to give the directory to another user")
        d.mkdir(mode=0o700)
        os.chown(d, NOBODY, NOBODY)
    why = {"symlink": "is a symlink", "open": "open to others", "file": "not a directory"}
    with pytest.raises(SetupError, match=why.get(plant, f"belongs to uid {NOBODY}")):
        private_dir(d)


def test_a_predictable_file_is_never_written_through_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "state.json").symlink_to(victim)
    with pytest.raises(FileExistsError):
        create_private(tmp_path / "state.json")
    assert victim.read_text() == "keep"
    fd = create_private(tmp_path / "new")
    os.close(fd)
    assert (os.stat(tmp_path / "new").st_mode & 0o777) == 0o600


def test_the_local_rack_refuses_a_rack_dir_someone_else_made(tmp_path):
    """Another user made /tmp/vfio-rack-$UID first (with their pids.json in it): `up` and
    `down` refuse it, and nothing is started or killed."""
    d = tmp_path / "vfio-rack-0"
    d.mkdir()
    d.chmod(0o777)
    (d / "pids.json").write_text('{"exporter": 1}')
    rack = LocalRack(load("local-rack"), d)
    with pytest.raises(SetupError, match="open to others"):
        rack.up()
    with pytest.raises(SetupError, match="open to others"):
        rack.down()


def test_pids_of_processes_not_ours_are_not_trusted(tmp_path):
    d = private_dir(tmp_path / "rack")
    (d / "pids.json").write_text('{"coordinator": 1, "x": "1"}')  # pid 1 is ours as root...
    rack = LocalRack(load("local-rack"), d)
    pids = rack._pids()
    assert "x" not in pids  # not a pid at all
    if os.getuid() != 0:
        assert pids == {}  # init is root's, not ours
