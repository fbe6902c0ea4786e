"""Windows crash dumps (``MEMORY.DMP``: ``PAGEDUMP``/``PAGEDU64``), complete and bitmap forms.

What Windows, ``livekd``/``DumpIt`` and QEMU's ``dump-guest-memory format=win-dmp`` write. The
header (one page for 32-bit dumps, two for 64-bit) holds the physical memory descriptor: the
runs of page frames the machine has. Then either:

- ``DumpType`` 1, a complete dump: every run's pages, one after the other, from the end of the
  header;
- ``DumpType`` 5 or 6, a bitmap dump (``SDMP``/``FDMP`` summary header after the dump header):
  one bit per frame; the set frames' pages are stored in frame order from ``HeaderSize``.

Coverage comes from the dump's own descriptor: frames in the machine's runs that the dump does
not store (a kernel-only bitmap dump leaves out user memory, where malware lives) are
``unreadable()`` naming the dump type, never zeros. Other types (triage, header-only) are a
:class:`~scanner.errors.SourceError` naming the type. Field offsets follow the structures
``_DUMP_HEADER``/``_DUMP_HEADER64`` and ``_SUMMARY_DUMP``; Volatility 3 reads the same forms and
is the tests' second reader.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from scanner.acquisition.memory.base import PhysRange
from scanner.acquisition.memory.bitmaps import frame_runs
from scanner.acquisition.memory.segmented import Layout, Segment, SegmentedDump
from scanner.errors import SourceError

PAGE = 0x1000
MAX_RUNS = 1 << 12
MAX_BITMAP_BITS = 1 << 30  # 4 TiB of 4 KiB frames
SUMMARY_SIGNATURES = (b"SDMP", b"FDMP")
COMPLETE, BITMAP_FULL, BITMAP_KERNEL = 1, 5, 6
TYPE_NAMES = {2: "summary", 3: "header only", 4: "triage (minidump)", 7: "automatic", 8: "kernel (bitmap, active)"}


@dataclass(frozen=True)
class _Shape:
    header_pages: int
    runs_at: int  # PhysicalMemoryBlockBuffer
    run_table_at: int  # offset of Run[] inside the descriptor
    run: struct.Struct
    dump_type_at: int


SHAPES = {
    b"PAGEDUMP": _Shape(1, 100, 8, struct.Struct("<II"), 3976),
    b"PAGEDU64": _Shape(2, 136, 16, struct.Struct("<QQ"), 3992),
}


class WindowsCrashMemory(SegmentedDump):
    """Guest physical memory from a complete or bitmap Windows crash dump."""

    format = "wincrash"

    def _layout(self) -> Layout:
        signature = self.read_header(0, 8)
        shape = SHAPES.get(signature)
        if shape is None:
            raise SourceError(self.name, f"not a Windows crash dump (signature {signature!r})")
        dump_type = struct.unpack("<I", self.read_header(shape.dump_type_at, 4).ljust(4, b"\0"))[0]
        runs = self._runs(shape)
        self.dump_type = dump_type
        if dump_type == COMPLETE:
            return self._complete(shape, runs)
        if dump_type in (BITMAP_FULL, BITMAP_KERNEL):
            return self._bitmap(shape, runs, dump_type)
        name = TYPE_NAMES.get(dump_type, "unknown")
        raise SourceError(self.name, f"Windows crash dump type {dump_type} ({name}) holds no physical memory map")

    def _runs(self, shape: _Shape) -> list[PhysRange]:
        head = self.read_header(shape.runs_at, 4)
        count = struct.unpack("<I", head.ljust(4, b"\0"))[0]
        if count == 0 or count > MAX_RUNS:
            raise SourceError(self.name, f"physical memory descriptor has {count} runs (1..{MAX_RUNS})")
        table = self.read_header(shape.runs_at + shape.run_table_at, count * shape.run.size)
        table_end = shape.runs_at + shape.run_table_at + count * shape.run.size
        if len(table) < count * shape.run.size or table_end > shape.header_pages * PAGE:
            raise SourceError(self.name, f"physical memory descriptor's {count} runs do not fit in the header")
        runs = []
        for i in range(count):
            base, pages = shape.run.unpack_from(table, i * shape.run.size)
            if base + pages > MAX_BITMAP_BITS:
                raise SourceError(self.name, f"run {i} (frame {base:#x}, {pages:#x} frames) is past 4 TiB")
            runs.append(PhysRange(base * PAGE, pages * PAGE))
        return runs

    def _complete(self, shape: _Shape, runs: list[PhysRange]) -> Layout:
        offset = shape.header_pages * PAGE
        segments = []
        for r in runs:
            segments.append(Segment(r.start, offset, r.length))
            offset += r.length
        return Layout(segments)

    def _bitmap(self, shape: _Shape, runs: list[PhysRange], dump_type: int) -> Layout:
        at = shape.header_pages * PAGE
        summary = self.read_header(at, 56)
        if len(summary) < 56 or summary[:4] not in SUMMARY_SIGNATURES or summary[4:8] != b"DUMP":
            raise SourceError(self.name, f"bitmap dump without a summary header at {at:#x}")
        header_size, _pages, bits = struct.unpack_from("<QQQ", summary, 32)
        if bits > MAX_BITMAP_BITS:
            raise SourceError(self.name, f"bitmap of {bits} frames (limit {MAX_BITMAP_BITS})")
        bitmap = self.read_header(at + 56, -(-bits // 8))
        if len(bitmap) < -(-bits // 8):
            raise SourceError(self.name, "bitmap runs past the end of the dump")
        segments: list[Segment] = []
        offset = header_size
        for first, end, stored in frame_runs(bitmap, bitmap, bits):
            if not stored:
                continue
            segments.append(Segment(first * PAGE, offset, (end - first) * PAGE))
            offset += (end - first) * PAGE
        kind = "kernel memory" if dump_type == BITMAP_KERNEL else "bitmap"
        absent = [(r, f"not stored in this {kind} dump (type {dump_type})") for r in _minus(runs, segments)]
        return Layout(segments, absent)


def _minus(runs: list[PhysRange], segments: list[Segment]) -> list[PhysRange]:
    """Parts of ``runs`` that no segment stores."""
    out: list[PhysRange] = []
    for r in runs:
        lo = r.start
        for s in segments:
            if s.phys_end <= lo or s.phys >= r.end:
                continue
            if s.phys > lo:
                out.append(PhysRange(lo, s.phys - lo))
            lo = max(lo, s.phys_end)
        if lo < r.end:
            out.append(PhysRange(lo, r.end - lo))
    return out
