"""x86-64 address translation through the guest's own page tables (4-level, and 5-level).

A :class:`PageTables` is a root (the physical address CR3 would hold) over a
:class:`~scanner.acquisition.memory.MemorySource`. It translates one address, or lists the
mappings of a virtual range in order, descending only into present entries, so an empty
range costs nothing. Large pages (1 GiB at level 3, 2 MiB at level 2) are leaves.

Contract: nothing is guessed. A non-present entry is reported as :class:`NotPresent` (with the
raw entry: 0 means never populated, anything else is e.g. a swap entry); a table or page outside
the source's address map is reported as :class:`BadEntry`, never followed. Walks are bounded by
``max_leaves``; past it, the rest of the range is reported as one ``BadEntry`` with the reason.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from scanner.acquisition.memory import MemorySource
from scanner.errors import UnreadableError

PAGE = 4096
PRESENT = 1 << 0
WRITABLE = 1 << 1
USER = 1 << 2
LARGE = 1 << 7
NX = 1 << 63
ADDR_MASK = 0x000F_FFFF_FFFF_F000
MAX_LEAVES = 1 << 22
_TABLE = struct.Struct("<512Q")


@dataclass(frozen=True)
class Mapping:
    """``size`` bytes at virtual ``virtual`` are at physical ``physical`` (a 4 KiB/2 MiB/1 GiB page or a run)."""

    virtual: int
    physical: int
    size: int
    writable: bool = True
    executable: bool = True


@dataclass(frozen=True)
class NotPresent:
    """``size`` bytes at ``virtual`` are not mapped; ``entry`` is the raw entry (0: never populated)."""

    virtual: int
    size: int
    entry: int = 0


@dataclass(frozen=True)
class BadEntry:
    """``size`` bytes at ``virtual`` cannot be translated: a table outside RAM, a walk limit..."""

    virtual: int
    size: int
    reason: str


Piece = Mapping | NotPresent | BadEntry


def canonical(address: int, levels: int = 4) -> int:
    """Sign-extend ``address`` from 48 (or 57) bits to an unsigned 64-bit address."""
    bits = 48 if levels == 4 else 57
    address &= (1 << bits) - 1
    return address | ((1 << 64) - (1 << bits)) if address >> (bits - 1) else address


def is_canonical(address: int, levels: int = 4) -> bool:
    bits = 48 if levels == 4 else 57
    top = address >> (bits - 1)
    return top in (0, (1 << (65 - bits)) - 1)


class PageTables:
    """A paging hierarchy rooted at physical ``root`` (``levels`` 4 or 5)."""

    def __init__(self, source: MemorySource, root: int, levels: int = 4, max_leaves: int = MAX_LEAVES) -> None:
        if levels not in (4, 5):
            raise ValueError(f"paging levels must be 4 or 5, not {levels}")
        self.source = source
        self.root = root & ADDR_MASK
        self.levels = levels
        self.max_leaves = max_leaves
        self._tables: dict[int, tuple[int, ...] | None] = {}

    def table(self, physical: int) -> tuple[int, ...] | None:
        """The 512 entries of the table at ``physical``; None if it is outside the source."""
        if physical in self._tables:
            return self._tables[physical]
        try:
            with self.source.window(physical, PAGE) as view:
                entries: tuple[int, ...] | None = _TABLE.unpack(view)
        except UnreadableError:
            entries = None
        if len(self._tables) > 65536:
            self._tables.clear()
        self._tables[physical] = entries
        return entries

    def translate(self, virtual: int) -> int | None:
        """The physical address of ``virtual``, or None if not mapped (any reason)."""
        for piece in self.walk(virtual, virtual + 1):
            if isinstance(piece, Mapping):
                return piece.physical + (virtual - piece.virtual)
        return None

    def walk(self, start: int, end: int) -> Iterator[Piece]:
        """Every piece of ``[start, end)`` in address order (virtual addresses canonical)."""
        if end <= start:
            return
        budget = [self.max_leaves]
        top_shift = 39 if self.levels == 4 else 48
        span = 1 << (top_shift + 9)
        lo, hi = start & (span - 1), ((end - 1) & (span - 1)) + 1
        yield from self._walk(self.root, top_shift, 0, lo, hi, budget)

    def _walk(self, table: int, shift: int, base: int, lo: int, hi: int, budget: list[int]) -> Iterator[Piece]:
        entries = self.table(table)
        size = 1 << shift
        if entries is None:
            yield BadEntry(canonical(lo, self.levels), hi - lo, f"page table at {table:#x} is outside guest memory")
            return
        first, last = (lo - base) >> shift, (hi - 1 - base) >> shift
        for i in range(first, last + 1):
            e_lo, e_hi = max(lo, base + i * size), min(hi, base + (i + 1) * size)
            v = canonical(e_lo, self.levels)
            if budget[0] <= 0:
                yield BadEntry(v, hi - e_lo, f"page walk stopped after {self.max_leaves} entries")
                return
            entry = entries[i]
            if not entry & PRESENT:
                budget[0] -= 1
                yield NotPresent(v, e_hi - e_lo, entry)
                continue
            target = entry & ADDR_MASK
            if shift == 12 or (entry & LARGE and shift in (21, 30)):
                budget[0] -= 1
                phys = (target & ~(size - 1)) + (e_lo - base - i * size)
                yield from self._leaf(v, phys, e_hi - e_lo, entry)
            elif entry & LARGE:
                budget[0] -= 1
                yield BadEntry(v, e_hi - e_lo, f"large page bit set at level {shift} ({entry:#x})")
            else:
                yield from self._walk(target, shift - 9, base + i * size, e_lo, e_hi, budget)

    def _leaf(self, virtual: int, physical: int, size: int, entry: int) -> Iterator[Piece]:
        ranges = self.source.ranges()
        end = physical + size
        if not any(r.start <= physical and end <= r.end for r in ranges):
            yield BadEntry(virtual, size, f"maps physical {physical:#x} outside guest memory")
            return
        yield Mapping(virtual, physical, size, bool(entry & WRITABLE), not entry & NX)


def runs(pieces: Iterator[Piece]) -> Iterator[Piece]:
    """Merge adjacent pieces: physically contiguous mappings, absent spans of the same kind."""
    held: Piece | None = None
    for p in pieces:
        if held is None:
            held = p
            continue
        merged = _merge(held, p)
        if merged is None:
            yield held
            held = p
        else:
            held = merged
    if held is not None:
        yield held


def _merge(a: Piece, b: Piece) -> Piece | None:
    if a.virtual + a.size != b.virtual:
        return None
    if isinstance(a, Mapping) and isinstance(b, Mapping) and a.physical + a.size == b.physical:
        return Mapping(a.virtual, a.physical, a.size + b.size, a.writable, a.executable)
    if isinstance(a, NotPresent) and isinstance(b, NotPresent) and (a.entry == 0) == (b.entry == 0):
        return NotPresent(a.virtual, a.size + b.size, a.entry)
    return None
