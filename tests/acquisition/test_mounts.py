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
