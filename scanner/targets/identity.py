"""Content identity the appliance can vouch for without reading the content.

A rescan of an unchanged file or disk image should not read it again. The content digest is the
only thing the result cache trusts, so this module says when the host's own file metadata proves
that bytes hashed earlier are still the bytes on disk: a :class:`Stamp` (device, inode, size,
mtime and ctime in ns) of a file on the appliance, the way ``git``'s index and backup tools
recognise unchanged files.

Why it holds: every write, truncate, ``utimes`` or rename of a file sets its ctime to the current
time, and ctime cannot be set from user space. So if a file's ctime was already ``SETTLE_NS``
older than the clock when it was stamped, any later change gives it a new ctime, and an equal
stamp later means no change in between. A file changed within the last ``SETTLE_NS`` is not
*settled* (its next change could land in the same timestamp tick, the "racy git" case; FAT keeps
2 s times): it gets no identity and is hashed every time. What this does not survive: root on the
appliance rewriting the clock or the block device underneath the filesystem. Guest-controlled
metadata (inode times inside a disk image) is never used: a file inside an image inherits its
identity from the image files only.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from typing import Any

SETTLE_NS = 3_000_000_000  # covers coarse clocks and 2 s filesystem time granularity


@dataclass(frozen=True)
class Stamp:
    """What the host says about one file at one moment."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    taken_ns: int  # wall clock when stat was called; not part of the equality that matters

    @classmethod
    def of(cls, st: os.stat_result, taken_ns: int | None = None) -> Stamp:
        taken = time.time_ns() if taken_ns is None else taken_ns
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, taken)

    @property
    def key(self) -> tuple[int, int, int, int, int]:
        return (self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)

    @property
    def settled(self) -> bool:
        """The file had not changed for ``SETTLE_NS`` when stamped (mtime too: it is set from
        user space only together with a new ctime, but a clock step back could leave it ahead)."""
        newest = max(self.ctime_ns, self.mtime_ns)
        return self.taken_ns - newest >= SETTLE_NS

    def same_file(self, st: os.stat_result) -> bool:
        """``st`` (a later ``fstat``/``stat``) is the same, unchanged file."""
        return Stamp.of(st, self.taken_ns).key == self.key


def stamp(path: str | os.PathLike[str]) -> Stamp | None:
    """The stamp of ``path`` (symlinks followed), or None if it cannot be stat'ed."""
    taken = time.time_ns()
    try:
        return Stamp.of(os.stat(path), taken)
    except OSError:
        return None


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
