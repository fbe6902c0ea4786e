"""Guest physical memory sources: one interface for live guests and every dump format.

A source exposes an **address map** (the physical ranges that exist, with holes such as the PCI
hole left out) and read-only windows onto them. A backend implements ``_ranges`` and
``_window``; the base checks every request against the map, so a backend never reads outside
what it declared and a hostile header cannot send a read anywhere else.

Contract:
- ``ranges()`` is sorted, non-overlapping, and bounded in count.
- ``window(address, length)`` for a span inside one range returns a view valid inside the
  ``with`` block; anything it cannot read raises :class:`~scanner.errors.UnreadableError`
  naming the address, and the scan records it as a gap (never as clean memory).
- ``unreadable()`` lists ranges the source already knows it cannot supply (a dump shorter than
  its header says); the memory target turns them into gaps.
"""

from __future__ import annotations

import abc
import bisect
import itertools
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from scanner.errors import SourceError, UnreadableError

MAX_RANGES = 4096


@dataclass(frozen=True, order=True)
class PhysRange:
    """``length`` bytes of guest physical memory starting at ``start``."""

    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


class MemorySource(abc.ABC):
    """Read-only guest physical memory. Subclasses: one module each, registered by format."""

    format: str = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self._map: list[PhysRange] | None = None

    def ranges(self) -> Sequence[PhysRange]:
        if self._map is None:
            self._map = _checked(self.name, self._ranges())
        return self._map

    def unreadable(self) -> Sequence[tuple[PhysRange, str]]:
        return ()

    def holes(self, address: int, length: int) -> Sequence[tuple[int, int]]:
        """``[(start, end), ...]`` physical ranges inside ``[address, address + length)`` that the
        source knows are all zero without reading them (e.g. holes of a sparse RAM file)."""
        return ()

    @property
    def size(self) -> int:
        return sum(r.length for r in self.ranges())

    def files(self) -> Sequence[str]:
        """The files whose bytes are all this source reads (a dump and its metadata), so their
        stamps can stand for its content (``scanner.targets.identity``); empty for anything live."""
        return ()

    def gather(self, physicals: bytes, lengths: bytes, dst: bytearray) -> bool:
        """Copy run ``i`` (physical address ``physicals[i]``, ``lengths[i]`` bytes; little-endian
        uint64 arrays) into ``dst`` one after the other, in one native call with no Python loop
        per page (a process region's scattered pages). False: this source cannot, the caller reads
        window by window. Implementations read nothing outside the address map; anything they
        cannot read raises :class:`~scanner.errors.UnreadableError`."""
        return False

    def window(self, address: int, length: int) -> AbstractContextManager[memoryview]:
        ranges = self.ranges()
        i = bisect.bisect_right([r.start for r in ranges], address) - 1
        if i < 0 or address + length > ranges[i].end:
            raise UnreadableError(self.name, address, length, "outside the address map")
        return self._window(address, length)

    @abc.abstractmethod
    def _ranges(self) -> Sequence[PhysRange]:
        """The physical ranges this source holds."""

    @abc.abstractmethod
    def _window(self, address: int, length: int) -> AbstractContextManager[memoryview]:
        """A view of ``length`` bytes at physical ``address`` (already checked against the map)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the file or the introspection session."""


def _checked(name: str, ranges: Sequence[PhysRange]) -> list[PhysRange]:
    if len(ranges) > MAX_RANGES:
        raise SourceError(name, f"address map has {len(ranges)} ranges (limit {MAX_RANGES})")
    out = sorted(r for r in ranges if r.length > 0)
    for r in out:
        if r.start < 0 or r.length < 0:
            raise SourceError(name, f"negative range {r}")
    for a, b in itertools.pairwise(out):
        if b.start < a.end:
            raise SourceError(name, f"overlapping ranges at {b.start:#x}")
    return out
