"""LiME (Linux Memory Extractor) dumps in ``format=lime``, and a writer for tests.

The file is a sequence of ranges, each a 32-byte little-endian header (magic ``0x4C694D45``
"EMiL", version 1, ``s_addr``, ``e_addr`` *inclusive*, 8 reserved bytes) followed by the
range's ``e_addr - s_addr + 1`` bytes. The address map is the ranges (joined as described in
:mod:`~scanner.acquisition.memory.segmented`).

Hostile input: at most ``MAX_LIME_RANGES`` headers; a header with bad magic, another version or
``e_addr < s_addr`` (including trailing bytes too short for a header) is a
:class:`~scanner.errors.SourceError` naming its file offset; a range claiming to run past the end
of the file keeps what is there and the missing part is ``unreadable()``.
"""

from __future__ import annotations

import struct
from contextlib import closing
from pathlib import Path

from scanner.acquisition.memory.base import MemorySource, PhysRange
from scanner.acquisition.memory.segmented import Layout, Segment, SegmentedDump
from scanner.errors import SourceError

LIME_MAGIC = 0x4C694D45
LIME_VERSION = 1
HEADER = struct.Struct("<IIQQ8s")
MAX_LIME_RANGES = 4096
MiB = 1 << 20


class LimeMemory(SegmentedDump):
    """Guest physical memory from a LiME dump."""

    format = "lime"

    def _layout(self) -> Layout:
        segments: list[Segment] = []
        offset = 0
        while offset < self.file_size:
            if len(segments) == MAX_LIME_RANGES:
                raise SourceError(self.name, f"more than {MAX_LIME_RANGES} LiME ranges (next at {offset:#x})")
            raw = self.read_header(offset, HEADER.size)
            if len(raw) < HEADER.size:
                raise SourceError(self.name, f"truncated LiME header at offset {offset:#x}")
            magic, version, start, last, _ = HEADER.unpack(raw)
            if magic != LIME_MAGIC:
                raise SourceError(self.name, f"bad LiME magic {magic:#010x} at offset {offset:#x}")
            if version != LIME_VERSION:
                raise SourceError(self.name, f"unsupported LiME version {version} at offset {offset:#x}")
            if last < start:
                raise SourceError(
                    self.name,
                    f"LiME range at offset {offset:#x} ends ({last:#x}) before it starts ({start:#x})",
                )
            length = last - start + 1
            segments.append(Segment(start, offset + HEADER.size, length))
            offset += HEADER.size + length
        if not segments:
            raise SourceError(self.name, "LiME dump is empty")
        return Layout(segments)


def to_lime(source: MemorySource | str | Path, out_path: str | Path, block: int = MiB) -> list[PhysRange]:
    """Write ``source`` (a memory source, or the path of a raw dump) as a LiME file.

    All-zero ``block``-sized blocks are left out, so a raw dump becomes several ranges with holes
    between them. Returns the ranges written, in file order.
    """
    if isinstance(source, (str, Path)):
        from scanner.acquisition.memory.raw import RawMemory

        with closing(RawMemory(str(source))) as raw:
            return to_lime(raw, out_path, block)
    runs = _nonzero_runs(source, block)
    with Path(out_path).open("wb") as out:
        for run in runs:
            out.write(HEADER.pack(LIME_MAGIC, LIME_VERSION, run.start, run.end - 1, bytes(8)))
            for at in range(run.start, run.end, block):
                with source.window(at, min(block, run.end - at)) as view:
                    out.write(view)
    return runs


def _nonzero_runs(source: MemorySource, block: int) -> list[PhysRange]:
    zeros = bytes(block)
    runs: list[PhysRange] = []
    for r in source.ranges():
        for at in range(r.start, r.end, block):
            n = min(block, r.end - at)
            with source.window(at, n) as view:
                if view.tobytes() == zeros[:n]:
                    continue
            if runs and runs[-1].end == at:
                runs[-1] = PhysRange(runs[-1].start, runs[-1].length + n)
            else:
                runs.append(PhysRange(at, n))
    return runs
