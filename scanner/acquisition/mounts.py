"""Which filesystem a file lives on, from ``/proc/self/mountinfo`` (keyed by device number).

Reading guest RAM and trusting file stamps both depend on it: hugetlbfs maps only at huge-page
offsets, tmpfs never writes pages back, network and FUSE filesystems report others' times.
"""

from __future__ import annotations

import os

MOUNTINFO = "/proc/self/mountinfo"
_fs_by_dev: dict[tuple[int, int], str] = {}


def filesystem(dev: int) -> str:
    """The type of the filesystem mounted as device ``dev`` (``/proc/self/mountinfo``), or ""."""
    key = (os.major(dev), os.minor(dev))
    if key not in _fs_by_dev:
        _fs_by_dev.update(_mounts())  # a mount made since the last look
    return _fs_by_dev.get(key, "")


def _mounts() -> dict[tuple[int, int], str]:
    out: dict[tuple[int, int], str] = {}
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if " - " not in line or len(fields) < 3:
                    continue
                major, _, minor = fields[2].partition(":")
                after = line.split(" - ", 1)[1].split()
                if major.isdigit() and minor.isdigit() and after:
                    out.setdefault((int(major), int(minor)), after[0])
    except OSError:
        return {}
    return out
