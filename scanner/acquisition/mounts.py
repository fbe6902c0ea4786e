"""Which filesystem a file lives on, from ``/proc/self/mountinfo`` (keyed by device number).

Reading guest RAM and trusting file stamps both depend on it: hugetlbfs maps only at huge-page
offsets, tmpfs never writes pages back, network and FUSE filesystems report others' times.
"""

from __future__ import annotations

import ctypes
import os
import select
import threading

MOUNTINFO = "/proc/self/mountinfo"
_fs_by_dev: dict[tuple[int, int], str] = {}
_lock = threading.Lock()
_watch: list[tuple[int, select.poll]] = []  # an fd on the mount table, readable "changed" by poll
HUGETLBFS_MAGIC = 0x958458F6  # linux/magic.h
_LIBC = ctypes.CDLL(None, use_errno=True)


def on_hugetlbfs(fd: int) -> bool:
    """The open file ``fd`` lives on a hugetlbfs (``fstatfs``), mounted or not: a
    ``memory-backend-memfd,hugetlb=on`` memfd sits on the kernel's internal hugetlbfs, which no
    mount table lists. Such files map only at huge-page offsets and have no ``SEEK_HOLE``."""
    buf = ctypes.create_string_buffer(256)  # struct statfs: f_type is its first word
    if _LIBC.fstatfs(fd, buf) != 0:
        return False
    return int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], "little") & 0xFFFFFFFF == HUGETLBFS_MAGIC


def filesystem(dev: int) -> str:
    """The type of the filesystem mounted as device ``dev`` (``/proc/self/mountinfo``), or "".

    Device numbers are reused (anonymous ones like tmpfs's, hugetlbfs's and btrfs's at every
    mount; a loop device after losetup -d), so the cache is dropped whenever the kernel reports
    a mount or unmount (``poll`` on the mount table, as proc(5) documents), not only on a miss.
    """
    key = (os.major(dev), os.minor(dev))
    with _lock:
        if _mount_table_changed():
            _fs_by_dev.clear()
        if key not in _fs_by_dev:
            _fs_by_dev.update(_mounts())  # a mount made since the last look
        return _fs_by_dev.get(key, "")


def _mount_table_changed() -> bool:
    """True the first time and after any mount or unmount since the last call (then re-armed)."""
    try:
        if not _watch:
            fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
            poller = select.poll()
            poller.register(fd, select.POLLPRI | select.POLLERR)
            _watch.append((fd, poller))
            _drain(fd)
            return True
        fd, poller = _watch[0]
        if not poller.poll(0):
            return False
        _drain(fd)  # reading the table to its end re-arms the notification
        return True
    except OSError:
        return True  # no way to tell: never trust a stale answer


def _drain(fd: int) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    while os.read(fd, 65536):
        pass


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
