"""A point-in-time copy of guest RAM in host memory, so a paused guest runs again before the scan.

Paused mode wants a consistent view; holding the guest for a whole YARA scan makes the pause
last as long as the scan. Instead the guest is paused only while its RAM is copied into a sealed
``memfd`` (one copy per byte, on every engine thread, pages the source knows are zero left as
holes: never allocated), then resumed; the scan reads the copy, zero-copy, with the holes known
(never per-window ``SEEK_HOLE``).

Contract: :func:`take` copies every byte of every range of ``source`` or raises (an unreadable
range is not silently zero: it raises :class:`~scanner.errors.UnreadableError`); the snapshot has
the same address map; its holes are exactly the runs the source reported as zero.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

from scanner.acquisition.mapped import file_window, holes_within
from scanner.acquisition.memory.base import MemorySource, PhysRange

PIECE = 64 << 20
PAGE = mmap.PAGESIZE


def available_memory() -> int:
    """``MemAvailable`` of the host in bytes (0 if unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def to_copy(source: MemorySource) -> int:
    """Bytes a snapshot of ``source`` would hold (its ranges less the holes it knows)."""
    total = 0
    for r in source.ranges():
        total += r.length - sum(b - a for a, b in source.holes(r.start, r.length))
    return total


class RamSnapshot(MemorySource):
    """Guest RAM copied into a memfd at offset = guest-physical address."""

    format = "snapshot"

    def __init__(self, source: MemorySource, threads: int = 2) -> None:
        super().__init__(f"{source.name}@snapshot")
        self.origin_format = source.format
        self._map_ranges = list(source.ranges())
        end = max((r.end for r in self._map_ranges), default=0)
        self._fd = os.memfd_create("avscan-ram-snapshot", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self._fd, max(end, PAGE))
            self._holes = self._copy(source, threads, end)
        except BaseException:
            os.close(self._fd)
            raise

    def _copy(self, source: MemorySource, threads: int, end: int) -> list[tuple[int, int]]:
        pieces = [(a, min(PIECE, r.end - a)) for r in self._map_ranges for a in range(r.start, r.end, PIECE)]
        with mmap.mmap(self._fd, max(end, PAGE), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as dst:
            whole = memoryview(dst)
            try:
                with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="snapshot") as pool:
                    found = list(pool.map(lambda p: self._piece(source, p[0], p[1], whole), pieces))
            finally:
                whole.release()
        return sorted(h for piece in found for h in piece)

    def _piece(self, source: MemorySource, address: int, length: int, whole: memoryview) -> list[tuple[int, int]]:
        """Allocate the piece's pages that will hold data in one call (page faults on a fresh
        shared mapping, one per page, halve the copy rate), then copy."""
        position = address
        for a, b in [*sorted(source.holes(address, length)), (address + length, address + length)]:
            lo, hi = position - position % PAGE, -(-a // PAGE) * PAGE
            if hi > lo:
                os.posix_fallocate(self._fd, lo, min(hi, address + length) - lo)
            position = max(position, b)
        return copy_piece(source, address, length, whole[address : address + length])

    def _ranges(self) -> Sequence[PhysRange]:
        return self._map_ranges

    def _window(self, address: int, length: int) -> AbstractContextManager[memoryview]:
        return file_window(self._fd, address, length, self.name, holes=True, known=self._holes)

    def holes(self, address: int, length: int) -> Sequence[tuple[int, int]]:
        return holes_within(self._holes, address, address + length)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def copy_piece(source: MemorySource, address: int, length: int, dst: memoryview) -> list[tuple[int, int]]:
    """Copy ``length`` bytes at ``address`` into ``dst``; return the runs skipped as zero (whole
    pages the source reports as holes). A source with ``read_into`` does it itself."""
    reader = getattr(source, "read_into", None)
    if reader is not None:
        return list(reader(address, length, dst))
    end = address + length
    skipped: list[tuple[int, int]] = []
    position = address
    for a, b in sorted(source.holes(address, length)):
        lo, hi = -(-max(a, position) // PAGE) * PAGE, min(b, end) // PAGE * PAGE  # whole pages only
        if lo >= hi:
            continue
        _copy(source, position, lo, address, dst)
        skipped.append((lo, hi))
        position = hi
    _copy(source, position, end, address, dst)
    return skipped


def _copy(source: MemorySource, start: int, end: int, base: int, dst: memoryview) -> None:
    for a in range(start, end, PIECE):
        n = min(PIECE, end - a)
        with source.window(a, n) as view:
            dst[a - base : a - base + n] = view
