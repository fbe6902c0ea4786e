"""Page-table walking on synthetic guest memory: 4 KiB, 2 MiB and 1 GiB pages, holes, bad tables, 5-level."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

from scanner.acquisition.memory import MemorySource, PhysRange
from scanner.errors import UnreadableError
from scanner.guestos.linux.paging import LARGE, PRESENT, WRITABLE, BadEntry, Mapping, NotPresent, PageTables, runs

MiB = 1 << 20
GiB = 1 << 30


class BytesMemory(MemorySource):
    """Guest physical memory from a bytearray (tests only)."""

    format = "bytes"

    def __init__(self, data: bytearray) -> None:
        super().__init__("bytes")
        self.data = data

    def _ranges(self) -> Sequence[PhysRange]:
        return [PhysRange(0, len(self.data))]

    def _window(self, address: int, length: int) -> AbstractContextManager[memoryview]:
        if address + length > len(self.data):
            raise UnreadableError(self.name, address, length, "short")
        return nullcontext(memoryview(self.data)[address : address + length])


def put(mem: bytearray, table: int, index: int, value: int) -> None:
    struct.pack_into("<Q", mem, table + 8 * index, value)


def idx(virtual: int, shift: int) -> int:
    return (virtual >> shift) & 511


def build() -> tuple[BytesMemory, dict[str, int]]:
    """8 MiB of memory: PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000."""
    mem = bytearray(8 * MiB)
    v4k, v2m, v1g = 0x7F00_0000_0000, 0x7F00_0040_0000, 0x7E00_0000_0000
    flags = PRESENT | WRITABLE
    put(mem, 0x1000, idx(v4k, 39), 0x2000 | flags)
    put(mem, 0x2000, idx(v4k, 30), 0x3000 | flags)
    put(mem, 0x3000, idx(v4k, 21), 0x4000 | flags)
    put(mem, 0x4000, 0, 0x10_0000 | flags)  # 4 KiB page -> 1 MiB
    put(mem, 0x4000, 1, 0x10_1000 | flags)  # contiguous
    put(mem, 0x4000, 2, 0)  # never populated
    put(mem, 0x4000, 3, 0x1234_5600)  # swap entry: not present, non-zero
    put(mem, 0x4000, 4, 0x7000_0000 | flags)  # outside memory
    put(mem, 0x3000, idx(v2m, 21), 0x20_0000 | flags | LARGE)  # 2 MiB page -> 2 MiB
    put(mem, 0x1000, idx(v1g, 39), 0x6000 | flags)
    put(mem, 0x6000, idx(v1g, 30), 0 | flags | LARGE)  # 1 GiB page at physical 0 (only 8 MiB exist)
    put(mem, 0x2000, 5, 0x9000_0000 | flags)  # a table outside memory
    return BytesMemory(mem), {"4k": v4k, "2m": v2m, "1g": v1g}


def test_translate_small_large_and_huge_pages() -> None:
    mem, v = build()
    pt = PageTables(mem, 0x1000)
    assert pt.translate(v["4k"] + 0x123) == 0x10_0123
    assert pt.translate(v["4k"] + 0x1FFF) == 0x10_1FFF
    assert pt.translate(v["2m"] + 0x1_2345) == 0x20_0000 + 0x1_2345
    assert pt.translate(v["1g"] + 0x5_0000) == 0x5_0000  # inside the 8 MiB that exist


def test_non_present_entries_are_reported_not_guessed() -> None:
    mem, v = build()
    pieces = list(PageTables(mem, 0x1000).walk(v["4k"], v["4k"] + 5 * 4096))
    assert [type(p) for p in pieces] == [Mapping, Mapping, NotPresent, NotPresent, BadEntry]
    assert pieces[2].entry == 0 and pieces[3].entry == 0x1234_5600
    assert "outside guest memory" in pieces[4].reason
    assert PageTables(mem, 0x1000).translate(v["4k"] + 2 * 4096) is None


def test_runs_merge_physically_contiguous_pages_only() -> None:
    mem, v = build()
    merged = list(runs(PageTables(mem, 0x1000).walk(v["4k"], v["4k"] + 3 * 4096)))
    assert merged[0] == Mapping(v["4k"], 0x10_0000, 8192, True, True)
    assert isinstance(merged[1], NotPresent)


def test_huge_page_beyond_memory_and_tables_outside_ram_are_bad_entries() -> None:
    mem, v = build()
    pt = PageTables(mem, 0x1000)
    assert pt.translate(v["1g"] + 512 * MiB) is None  # the 1 GiB page maps memory that does not exist
    bad = list(pt.walk(v["4k"] + (5 << 30), v["4k"] + (5 << 30) + 4096))
    assert isinstance(bad[0], BadEntry) and "outside guest memory" in bad[0].reason


def test_walk_of_an_empty_range_is_cheap_and_bounded() -> None:
    mem, _ = build()
    pt = PageTables(mem, 0x1000, max_leaves=100)
    pieces = list(pt.walk(0, 1 << 47))  # the whole user half: 256 top-level entries, none present
    assert len(pieces) == 101  # 100 entries, then the rest as one piece
    *walked, rest = pieces
    assert all(isinstance(p, NotPresent) for p in walked)
    assert isinstance(rest, BadEntry) and rest.reason == "page walk stopped after 100 entries"
    assert [p.virtual for p in pieces] == [i << 39 for i in range(101)]  # in order, no gap between them
    assert rest.virtual + rest.size == 1 << 47  # nothing past the limit goes unreported


def test_five_level_paging() -> None:
    mem = bytearray(1 * MiB)
    virtual = 0x00F0_0000_0000_1000  # needs 57 bits
    flags = PRESENT | WRITABLE
    put(mem, 0x1000, idx(virtual, 48), 0x2000 | flags)
    put(mem, 0x2000, idx(virtual, 39), 0x3000 | flags)
    put(mem, 0x3000, idx(virtual, 30), 0x4000 | flags)
    put(mem, 0x4000, idx(virtual, 21), 0x5000 | flags)
    put(mem, 0x5000, idx(virtual, 12), 0x8000 | flags)
    assert PageTables(BytesMemory(mem), 0x1000, levels=5).translate(virtual + 7) == 0x8007
