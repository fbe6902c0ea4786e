"""A writer for the ``newc`` cpio format, the one the Linux kernel unpacks as an initramfs.

Pure Python so that building an initramfs needs neither root (device nodes are just header
fields here) nor the ``cpio`` tool. Output is deterministic: inode numbers are assigned in
order and every mtime is 0, so the same entries always give the same bytes.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import BinaryIO

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One archive member. ``path`` is relative (``bin/busybox``), without a leading slash."""

    path: str
    mode: int
    data: bytes = b""
    rdev_major: int = 0
    rdev_minor: int = 0


def directory(path: str, perm: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perm)


def regular(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perm, rdev_major=major, rdev_minor=minor)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(entry: Entry, ino: int) -> bytes:
    name = entry.path.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        ino,
        entry.mode,
        0,
        0,
        nlink,
        0,
        len(entry.data),
        0,
        0,
        entry.rdev_major,
        entry.rdev_minor,
        len(name),
        0,
    )
    head = _MAGIC + b"".join(b"%08X" % f for f in fields) + name
    return head + _pad(len(head))


def write(out: BinaryIO, entries: list[Entry]) -> None:
    """Write ``entries`` then the trailer. Parents must come before their children."""
    for ino, entry in enumerate(entries, start=1):
        out.write(_header(entry, ino))
        out.write(entry.data)
        out.write(_pad(len(entry.data)))
    out.write(_header(Entry(_TRAILER, 0), 0))
