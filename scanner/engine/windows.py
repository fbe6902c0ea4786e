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
