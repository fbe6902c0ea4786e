"""Zero-copy read-only windows onto files: the one place that maps bytes for scanning.

Each window is its own ``mmap`` and is unmapped when the ``with`` block ends, so the pages a scan
touched leave the process's resident set as it moves on: scanning a multi-GiB image keeps RSS
near (window size x threads), not the image size.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import mmap
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from scanner import native
from scanner.acquisition.hostfile import size_of
from scanner.errors import UnreadableError

_GRANULARITY = mmap.ALLOCATIONGRANULARITY


def open_noatime(path: str | os.PathLike[str], flags: int = os.O_RDONLY) -> int:
    """``os.open`` with O_NOATIME where allowed (it needs file ownership; retried without)."""
    try:
        return os.open(path, flags | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        return os.open(path, flags)


@contextmanager
def file_window(
    fd: int,
    offset: int,
    length: int,
    where: str,
    holes: bool = False,
    known: Sequence[tuple[int, int]] | None = None,
) -> Iterator[memoryview]:
    """A read-only view of ``length`` bytes at ``offset`` of the open file ``fd``.

    ``holes``: the file may be sparse and its holes must stay holes (a guest's RAM file): whole
    pages inside holes read as zero without being touched (``native.map_file``). ``known``: the
    file's holes as the caller already asked for them (sorted), so they are not asked for again
    per window (``SEEK_HOLE`` on a populated tmpfs file costs time in proportion to the file).

    Raises :class:`UnreadableError` if the range lies outside the file (it shrank, or a header
    lied about it) or cannot be mapped.
    """
    if length == 0:
        yield memoryview(b"")
        return
    try:
        size = size_of(fd)  # a block device's st_size is 0
    except OSError as e:
        raise UnreadableError(where, offset, length, f"stat failed: {e.strerror}") from e
    if offset < 0 or offset + length > size:
        raise UnreadableError(where, offset, length, f"beyond end of file ({size} bytes)")
    if holes:
        # holes over the whole pages the range touches: a page the range covers only in part
        # can still lie wholly in a hole, and must not be touched either
        first, last = offset - offset % mmap.PAGESIZE, -(-(offset + length) // mmap.PAGESIZE) * mmap.PAGESIZE
        found = file_holes(fd, first, last - first) if known is None else holes_within(known, first, last)
        if found:
            with _sparse_window(fd, offset, length, where, found) as view:
                yield view
            return
    start = offset - offset % _GRANULARITY
    delta = offset - start
    try:
        mm = mmap.mmap(fd, delta + length, access=mmap.ACCESS_READ, offset=start)
    except (OSError, ValueError) as e:
        raise UnreadableError(where, offset, length, f"cannot map: {e}") from e
    whole = memoryview(mm)
    view = whole[delta : delta + length]
    try:
        yield view
    finally:
        view.release()
        whole.release()
        # a caller that kept a view keeps the mapping alive until its last reference goes
        with contextlib.suppress(BufferError):
            mm.close()


def holes_within(holes: Sequence[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The parts of sorted ``holes`` inside ``[start, end)``."""
    i = max(0, bisect.bisect_right(holes, start, key=lambda h: h[0]) - 1)
    out: list[tuple[int, int]] = []
    for a, b in holes[i:]:
        if a >= end:
            break
        if b > start:
            out.append((max(a, start), min(b, end)))
    return out


@contextmanager
def _sparse_window(fd: int, offset: int, length: int, where: str, holes: list[tuple[int, int]]) -> Iterator[memoryview]:
    try:
        mapping = native.map_file(fd, offset, length, holes)
    except (OSError, ValueError) as e:
        raise UnreadableError(where, offset, length, f"cannot map: {e}") from e
    view = memoryview(mapping)
    try:
        yield view
    finally:
        view.release()
        close = getattr(mapping, "close", None)
        if close is not None:
            with contextlib.suppress(BufferError):  # a kept view keeps the mapping until it goes
                close()


def pread_gather(fd: int, where: str, offsets: bytes, lengths: bytes, dst: bytearray) -> bool:
    """``native.pread_runs`` with its failures as :class:`UnreadableError` (at the first run)."""
    try:
        native.pread_runs(fd, offsets, lengths, dst)
    except (OSError, ValueError) as e:
        first = int.from_bytes(offsets[:8], "little") if len(offsets) >= 8 else 0
        raise UnreadableError(where, first, len(dst), f"gather failed: {e}") from e
    return True


def file_holes(fd: int, offset: int, length: int, limit: int = 65536) -> list[tuple[int, int]]:
    """Holes of the open file ``fd`` within ``[offset, offset + length)`` (SEEK_DATA/SEEK_HOLE).

    A guest's RAM file on tmpfs is sparse where the guest never wrote, and tmpfs allocates a hole's
    pages when they are read through a mapping: knowing the holes lets a scan skip them without
    touching them, so scanning a mostly idle guest does not fill host memory. Returns [] where the
    filesystem cannot tell (every byte is then read). At most ``limit`` holes are reported. Bytes
    past the end of the file are never a hole: a file that shrank is missing data, not zeros.
    """
    out: list[tuple[int, int]] = []
    try:
        size = os.fstat(fd).st_size
    except OSError:
        return []
    end = min(offset + length, size)  # past the end of the file is missing, not zero
    position = offset
    try:
        while position < end and len(out) < limit:
            data = os.lseek(fd, position, os.SEEK_DATA)
            if data > position:
                out.append((position, min(data, end)))
            if data >= end:
                break
            position = os.lseek(fd, data, os.SEEK_HOLE)
    except OSError as e:  # ENXIO: no data after position, the rest is a hole
        if e.errno == errno.ENXIO and position < end:
            out.append((position, end))
        elif e.errno != errno.ENXIO:
            return []
    return out
