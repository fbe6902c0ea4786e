"""Filesystem types by device, as the RAM reader and the stamp trust need them."""

from __future__ import annotations

import os

import pytest

from scanner.acquisition import mounts


def test_known_mounts_are_named_by_their_type():
    assert mounts.filesystem(os.stat("/proc").st_dev) == "proc"
    if os.path.isdir("/dev/shm"):
        assert mounts.filesystem(os.stat("/dev/shm").st_dev) == "tmpfs"


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
