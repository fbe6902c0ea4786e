"""Filesystem types by device, as the RAM reader and the stamp trust need them."""

from __future__ import annotations

import os
import subprocess

import pytest

from scanner.acquisition import mounts


@pytest.fixture
def own_tmpfs(tmp_path):
    """A tmpfs mounted here (tests run as root), so one tmpfs is always there to be named."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "avscan-test", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_mounts_are_named_as_util_linux_names_them(own_tmpfs):
    """The oracle is findmnt (libmount), asked about each path."""
    paths = ["/", "/proc", "/sys", "/dev", str(own_tmpfs), str(own_tmpfs.parent)]
    for path in paths:
        theirs = subprocess.run(
            ["findmnt", "-n", "-o", "FSTYPE", "--target", path], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert mounts.filesystem(os.stat(path).st_dev) == theirs, path
    assert mounts.filesystem(os.stat(own_tmpfs).st_dev) == "tmpfs"
    assert mounts.filesystem(os.stat("/proc").st_dev) == "proc"


def test_an_unknown_device_or_an_unreadable_mountinfo_names_nothing(monkeypatch, tmp_path):
    assert mounts.filesystem(os.makedev(4095, 1048575)) == ""
    monkeypatch.setattr(mounts, "MOUNTINFO", str(tmp_path / "missing"))
    monkeypatch.setattr(mounts, "_fs_by_dev", {})
    assert mounts.filesystem(os.stat("/proc").st_dev) == ""


@pytest.mark.parametrize(
    "line",
    [
        "36 35 0:99 / /mnt/huge rw,relatime shared:1 - hugetlbfs hugetlbfs rw,pagesize=2M",
        "36 35 0:99 / /mnt/huge rw - hugetlbfs none rw",
    ],
)
def test_mountinfo_lines_with_optional_fields_parse(monkeypatch, tmp_path, line):
    info = tmp_path / "mountinfo"
    info.write_text("garbage line\n" + line + "\n")
    monkeypatch.setattr(mounts, "MOUNTINFO", str(info))
    monkeypatch.setattr(mounts, "_fs_by_dev", {})
    assert mounts.filesystem(os.makedev(0, 99)) == "hugetlbfs"


def test_a_device_number_reused_by_another_mount_is_named_afresh(tmp_path):
    """Anonymous device numbers are reused at the next mount: a tmpfs unmounted and a ramfs
    mounted in its place must not be named tmpfs from the cache."""
    mnt = tmp_path / "m"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "avscan-test", str(mnt)], check=True)
    dev = os.stat(mnt).st_dev
    assert mounts.filesystem(dev) == "tmpfs"
    subprocess.run(["umount", str(mnt)], check=True)
    for _ in range(20):  # the lowest free anonymous number is given out again; others may race us
        subprocess.run(["mount", "-t", "ramfs", "avscan-test", str(mnt)], check=True)
        try:
            if os.stat(mnt).st_dev == dev:
                assert mounts.filesystem(dev) == "ramfs"
                return
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    pytest.fail(f"device {os.major(dev)}:{os.minor(dev)} was not given out again in 20 mounts")
