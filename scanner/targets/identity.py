"""Content identity the appliance can vouch for without reading the content.

A rescan of an unchanged file or disk image should not read it again. The content digest is the
only thing the result cache trusts, so this module says when the host's own file metadata proves
that bytes hashed earlier are still the bytes on disk: a :class:`Stamp` (device, inode, size,
mtime and ctime in ns) of a file on the appliance, the way ``git``'s index and backup tools
recognise unchanged files, made stricter in three ways.

Why it holds: a ``write``, truncate, ``utimes`` or rename sets the file's ctime to the current
time, and ctime cannot be set from user space. A write through a shared mapping moves it only
when a clean page is first written (the page fault that makes it writable again), so a page
already dirty takes further writes silently until writeback cleans it: every stamp is taken
right after the file's dirty pages are written back (``native.writeback``: ``sync_file_range``,
no device flush), which write-protects them in every mapping, so any later write through a
mapping faults and moves ctime. If ctime was then already
``SETTLE_NS`` older than the clock, any later change gives a new ctime, and an equal stamp later
means no change in between. A file changed within the last ``SETTLE_NS`` is not *settled* (its
next change could land in the same timestamp tick, the "racy git" case; FAT keeps 2 s times): it
gets no identity and is hashed every time.

Only regular files on local filesystems whose page-fault path updates times and whose writeback
cleans pages (``TRUSTED_FILESYSTEMS``) get one. tmpfs never writes back, so a page written once
through a mapping (a QEMU guest's RAM) takes every later write with the same ctime; NFS, SMB
and FUSE report times their server or daemon chooses, and attribute caches lag; a block device's
node says nothing about the device's contents. Those are always hashed.

What this does not survive: root on the appliance rewriting the clock or the block device under
the filesystem. Guest-controlled metadata (inode times inside a disk image) is never used: a file
inside an image inherits its identity from the image files only.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass
from typing import Any

from scanner import native
from scanner.acquisition.mapped import open_noatime
from scanner.acquisition.mounts import filesystem

SETTLE_NS = 3_000_000_000  # covers coarse clocks and 2 s filesystem time granularity
# When a stamp is taken (ns since the epoch). The one clock the settle rule reads, so tests can
# run it ahead (a file left alone for SETTLE_NS) instead of sleeping; file times stay the kernel's.
CLOCK: Callable[[], int] = time.time_ns
TRUSTED_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs"})


@dataclass(frozen=True)
class Stamp:
    """What the host says about one file at one moment."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    taken_ns: int  # wall clock before the file was synced and stat'ed; not part of the key
    vouched: bool = False  # synced, a regular file, on a filesystem in TRUSTED_FILESYSTEMS

    @classmethod
    def of(cls, st: os.stat_result, taken_ns: int, synced: bool = False) -> Stamp:
        """A stamp from ``st``; ``synced``: the file was written back just before (see the
        module docstring: only then can it be vouched for)."""
        vouched = synced and stat.S_ISREG(st.st_mode) and filesystem(st.st_dev) in TRUSTED_FILESYSTEMS
        return cls(*_key(st), taken_ns, vouched)

    @property
    def key(self) -> tuple[int, int, int, int, int]:
        return (self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)

    @property
    def settled(self) -> bool:
        """The stamp can stand for the content: a regular file on a filesystem that keeps ctime
        itself, unchanged for ``SETTLE_NS`` when stamped (mtime too: it is set from user space
        only together with a new ctime, but a clock step back could leave it ahead)."""
        newest = max(self.ctime_ns, self.mtime_ns)
        return self.vouched and self.taken_ns - newest >= SETTLE_NS

    def same_file(self, st: os.stat_result) -> bool:
        """``st`` (a later ``fstat``/``stat``) is the same, unchanged file."""
        return _key(st) == self.key


def _key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stamp_fd(fd: int) -> Stamp:
    """The stamp of the open file ``fd``: synced first when it is a regular file, so that a
    write through a mapping after this point moves its ctime (module docstring)."""
    taken = CLOCK()
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or filesystem(st.st_dev) not in TRUSTED_FILESYSTEMS:
        return Stamp.of(st, taken)
    try:
        native.writeback(fd)
    except OSError:
        return Stamp.of(st, taken)
    return Stamp.of(os.fstat(fd), taken, synced=True)


def stamp(path: str | os.PathLike[str], follow: bool = True) -> Stamp | None:
    """The stamp of ``path`` (symlinks followed unless ``follow`` is false), or None if it
    cannot be opened."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = open_noatime(path, flags)
    except OSError:
        return None
    try:
        return stamp_fd(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def settled_identity(kind: str, params: Any, paths: Iterable[str]) -> bytes | None:
    """An identity for something made only of the files at ``paths`` and described by ``params``
    (JSON-able): None if any file cannot be stat'ed or is not settled."""
    stamps = []
    for path in paths:
        s = stamp(path)
        if s is None or not s.settled:
            return None
        stamps.append([os.path.abspath(path), *s.key])
    return digest(kind, params, stamps)


def digest(*parts: Any) -> bytes:
    """SHA-256 of the parts as canonical JSON (dataclasses as tuples)."""
    plain = [astuple(p) if hasattr(p, "__dataclass_fields__") else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, separators=(",", ":"), default=str).encode()).digest()
