"""Cutting a unit into overlapping windows, and deciding which window owns a match."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """Bytes ``[offset, offset + length)`` of a unit; matches starting before ``own_end`` are ours."""

    offset: int
    length: int
    own_end: int  # unit offset; a match starting at or after it belongs to the next window

    def owns(self, unit_offset: int) -> bool:
        return self.offset <= unit_offset < self.own_end


def plan_windows(size: int, chunk: int, overlap: int, chunkable: bool) -> Iterator[Window]:
    """Windows covering ``size`` bytes; one window for a non-chunkable or small unit."""
    if not chunkable or size <= chunk + overlap:
        yield Window(0, size, size)
        return
    offset = 0
    while offset + chunk + overlap < size:
        yield Window(offset, chunk + overlap, offset + chunk)
        offset += chunk
    yield Window(offset, size - offset, size)


def aligned_windows(size: int, cell: int, overlap: int, zero: bytes, block: int) -> list[Window]:
    """Windows cut at content-stable places: what the result cache needs (``scanner.engine.cache``).

    ``zero`` has one flag per ``block`` of the unit (1: all zero, not scanned). Each maximal run
    of non-zero blocks is cut at every multiple of ``cell`` (unit offsets), and each piece is one
    window. A window owns its piece, widened by ``overlap`` into a zero block on either side (a
    string that starts or ends next to a zero block is still seen whole), and reads ``overlap``
    bytes past what it owns, so a match up to ``overlap`` long starting in its own part is seen
    whole, by this window only. So a window's bytes and bounds depend only on those bytes and on
    whether the blocks at its edges are zero, never on the rest of the unit: identical memory at
    the same alignment in two guests gives identical windows. With zero blocks, ``overlap`` must be
    at most ``block // 2`` (two widened runs never meet across a zero block).
    """
    if cell <= 0 or (any(zero) and overlap > block // 2):
        raise ValueError("cell must be positive and overlap at most block / 2")
    windows: list[Window] = []
    for run_start, run_end in _nonzero_runs(zero, block, size):
        a = run_start
        while a < run_end:
            b = min(run_end, (a // cell + 1) * cell)
            own_start = max(0, a - overlap) if a == run_start else a
            own_end = min(size, b + overlap) if b == run_end else b
            windows.append(Window(own_start, min(size, own_end + overlap) - own_start, own_end))
            a = b
    return windows


def _nonzero_runs(zero: bytes, block: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` byte ranges of maximal runs of non-zero blocks."""
    run_start = -1
    for i, is_zero in enumerate(zero):
        if not is_zero and run_start < 0:
            run_start = i * block
        elif is_zero and run_start >= 0:
            yield run_start, i * block
            run_start = -1
    if run_start >= 0:
        yield run_start, size
