"""Opening host files the appliance is asked to read: never blocks, never follows a planted link.

Every host file a scan reads (a memory image, a file under a scanned directory, a guest's RAM
file) is opened here. Paths come from API callers, configs and walks over directories that
tenants can write to, so the open itself must be safe:

- ``O_NONBLOCK``: opening a FIFO or a tty never waits for a writer (the open of a FIFO blocks
  forever without it, wedging the worker that asked);
- ``O_NOFOLLOW``: a symbolic link is refused unless the caller named the link itself
  (``follow=True``, used only for a path a user gave explicitly; walks never follow);
- ``O_CLOEXEC``: no descriptor leaks into the compiler child or other subprocesses;
- ``fstat`` on the descriptor (not the path: no race with a rename) before any read: only a
  regular file or, where the caller allows it, a block device is accepted. FIFOs, sockets,
  character devices and directories are refused with a one-line reason.

``O_NONBLOCK`` stays set: it has no effect on reads of regular files and block devices, and it
keeps any read of something that slipped through from waiting.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass

from scanner.errors import SourceError

FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFBLK: "a block device",
}


@dataclass(frozen=True)
class HostFile:
    """An open host file: its descriptor (owned by the caller), its ``fstat`` and its size.

    ``size`` is ``st_size`` for a regular file and the device's length for a block device
    (whose ``st_size`` is 0).
    """

    fd: int
    st: os.stat_result
    size: int

    @property
    def is_block(self) -> bool:
        return stat.S_ISBLK(self.st.st_mode)


def kind_of(mode: int) -> str:
    """What a file of ``mode`` is, in words ("a regular file", "a FIFO", ...)."""
    return KINDS.get(stat.S_IFMT(mode), "a regular file" if stat.S_ISREG(mode) else "a special file")


def open_host_file(path: str, what: str, follow: bool = False, block_devices: bool = False) -> HostFile:
    """Open ``path`` read-only as described in the module docstring.

    ``what`` names the file in errors ("memory image"). ``follow``: the caller named this path
    itself, so a symbolic link at the last component is resolved (links in walks are not).
    ``block_devices``: a block device is accepted too (a raw dump on a disk or LV).

    Raises :class:`SourceError` naming the path and what was wrong; never blocks.
    """
    flags = FLAGS | (0 if follow else os.O_NOFOLLOW) | getattr(os, "O_NOATIME", 0)
    try:
        fd = _open(path, flags)
    except OSError as e:
        raise SourceError(path, f"cannot open {what}: {_reason(path, e)}") from e
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            return HostFile(fd, st, st.st_size)
        if stat.S_ISBLK(st.st_mode) and block_devices:
            return HostFile(fd, st, os.lseek(fd, 0, os.SEEK_END))
        raise SourceError(path, f"cannot open {what}: it is {kind_of(st.st_mode)}, not a regular file")
    except OSError as e:
        os.close(fd)
        raise SourceError(path, f"cannot open {what}: {e.strerror or e}") from e
    except BaseException:
        os.close(fd)
        raise


def read_to_eof(fd: int, limit: int, chunk: int = 1024 * 1024) -> bytes | None:
    """The bytes of ``fd`` from its current position to EOF, read (not sized by ``st_size``:
    pseudo-files such as ``/proc/PID/environ`` say 0 and hold data); None if there are more than
    ``limit``. Raises OSError from the reads (EAGAIN included: nothing waits)."""
    parts: list[bytes] = []
    total = 0
    while total <= limit:
        data = os.read(fd, min(chunk, limit + 1 - total))
        if not data:
            return b"".join(parts)
        parts.append(data)
        total += len(data)
    return None


def size_of(fd: int) -> int:
    """The current length of the open file ``fd`` (a block device's too)."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return os.lseek(fd, 0, os.SEEK_END)
    return st.st_size


def _open(path: str, flags: int) -> int:
    """``os.open``, retried without O_NOATIME where it is not allowed (it needs ownership)."""
    try:
        return os.open(path, flags)
    except PermissionError:
        if not flags & getattr(os, "O_NOATIME", 0):
            raise
        return os.open(path, flags & ~getattr(os, "O_NOATIME", 0))


def _reason(path: str, e: OSError) -> str:
    """ELOOP from O_NOFOLLOW means the path is a symbolic link: say so."""
    if e.errno == errno.ELOOP:
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return "it is a symbolic link (not followed)"
    return e.strerror or str(e)


__all__ = ["HostFile", "kind_of", "open_host_file", "read_to_eof", "size_of"]
