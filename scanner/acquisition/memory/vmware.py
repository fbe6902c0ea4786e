"""VMware ``.vmem`` guest memory, mapped through the ``.vmss``/``.vmsn`` checkpoint next to it.

A ``.vmem`` holds guest RAM pages, but not always at file offset = physical address: for guests
larger than the PCI hole, RAM above the hole is stored right after the RAM below it. The
checkpoint file (``.vmss`` for a suspended VM, ``.vmsn`` for a snapshot; same name stem) says
where. Its layout, as read here:

- header ``<4sII``: magic (``D0BED2BE``, ``D1BAD1BA``, ``D2BED2BE`` or ``D3BED3BE``; the low nibble
  of the first byte is the format version), a word we ignore, the group count;
- that many group entries ``<64sQQ``: NUL-padded name, file offset of the group's tags, a word;
- in group ``memory``, tags until a ``00 00`` terminator. A tag is ``flags`` (u8), ``name_len``
  (u8), the name, ``(flags >> 6) & 3`` u32 indices, then data of ``flags & 0x3F`` bytes; a data
  length of 62 or 63 marks a blob: a size word (4 bytes in version 0, else 8), a second word of
  the same size, 2 padding bytes, then ``size`` bytes.
- ``regionsCount`` and, per region ``i``, ``regionPPN[i]`` (first physical page),
  ``regionPageNum[i]`` (first page in the ``.vmem``) and ``regionSize[i]`` (pages of 4 KiB).

Without a checkpoint the ``.vmem`` is read as flat physical memory, which is only right below
the PCI hole: a larger ``.vmem`` without its checkpoint is a :class:`~scanner.errors.SourceError`
saying which file is missing. A checkpoint with no regions means flat. A ``.vmem`` shorter than
the regions say keeps what it has; the rest is ``unreadable()`` with the reason.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from scanner.acquisition.hostfile import open_host_file
from scanner.acquisition.memory.segmented import Layout, Segment, SegmentedDump
from scanner.errors import SourceError

CHECKPOINT_MAGICS = (b"\xd0\xbe\xd2\xbe", b"\xd1\xba\xd1\xba", b"\xd2\xbe\xd2\xbe", b"\xd3\xbe\xd3\xbe")
CHECKPOINT_SUFFIXES = (".vmss", ".vmsn")
PAGE = 0x1000
PCI_HOLE_START = 0xC000_0000  # VMware keeps at most 3 GiB of RAM below the PCI hole
MAX_GROUPS = 1024
MAX_TAGS = 1 << 20
MAX_REGIONS = 4096
_HEADER = struct.Struct("<4sII")
_GROUP = struct.Struct("<64sQQ")
_REGION_TAGS = (b"regionPPN", b"regionPageNum", b"regionSize")

Tags = dict[tuple[bytes, tuple[int, ...]], int]


class VmwareMemory(SegmentedDump):
    """A ``.vmem`` with its ``.vmss``/``.vmsn`` (found by name, or given as ``checkpoint``).

    ``path`` may name the ``.vmem`` or the checkpoint; the other file is found next to it.
    """

    format = "vmware"

    def __init__(self, path: str, checkpoint: str | None = None) -> None:
        vmem, found = companion_files(path)
        self.checkpoint = checkpoint or found
        super().__init__(path, vmem)

    def _layout(self) -> Layout:
        if self.checkpoint is None:
            if self.file_size > PCI_HOLE_START:
                raise SourceError(
                    self.data_path,
                    f"{self.file_size:#x} bytes of .vmem reach past the PCI hole ({PCI_HOLE_START:#x}); "
                    f"its .vmss or .vmsn is needed to map it (none found next to it)",
                )
            return Layout([Segment(0, 0, self.file_size)])
        regions = read_regions(self.checkpoint)
        if not regions:
            return Layout([Segment(0, 0, self.file_size)])
        return Layout(regions)


def companion_files(path: str) -> tuple[str, str | None]:
    """The ``.vmem`` and the checkpoint (or None) for a path naming either of them."""
    p = Path(path)
    if p.suffix.lower() in CHECKPOINT_SUFFIXES:
        return str(p.with_suffix(".vmem")), str(p)
    for suffix in CHECKPOINT_SUFFIXES:
        candidate = p.with_suffix(suffix)
        if candidate.is_file():
            return str(p), str(candidate)
    return str(p), None


def read_regions(path: str) -> list[Segment]:
    """The memory regions a checkpoint file declares (empty: the ``.vmem`` is flat)."""
    opened = open_host_file(path, "checkpoint", follow=True)
    try:
        if opened.size < _HEADER.size:
            raise SourceError(path, f"checkpoint is {opened.size} bytes, too short for a header")
        with mmap.mmap(opened.fd, 0, access=mmap.ACCESS_READ) as data:
            return _regions(path, _memory_tags(path, data))
    except OSError as e:
        raise SourceError(path, f"cannot read checkpoint: {e.strerror or e}") from e
    finally:
        os.close(opened.fd)


def _memory_tags(path: str, data: mmap.mmap) -> Tags:
    magic, _, groups = _HEADER.unpack_from(data, 0)
    if magic not in CHECKPOINT_MAGICS:
        raise SourceError(path, f"bad checkpoint magic {magic.hex()}")
    version = magic[0] & 0xF
    if groups > MAX_GROUPS:
        raise SourceError(path, f"{groups} checkpoint groups (limit {MAX_GROUPS})")
    for i in range(groups):
        at = _HEADER.size + i * _GROUP.size
        if at + _GROUP.size > len(data):
            raise SourceError(path, f"checkpoint group table is truncated at {at:#x}")
        name, tags_at, _ = _GROUP.unpack_from(data, at)
        if name.rstrip(b"\0") == b"memory":
            return _read_tags(path, data, tags_at, version)
    raise SourceError(path, "checkpoint has no 'memory' group")


def _read_tags(path: str, data: mmap.mmap, at: int, version: int) -> Tags:
    """Numeric tags of one group, by (name, indices); blobs and odd sizes are skipped."""
    tags: Tags = {}
    for _ in range(MAX_TAGS):
        head = data[at : at + 2]
        if len(head) < 2:
            raise SourceError(path, f"checkpoint tags run past end of file at {at:#x}")
        flags, name_len = head
        if flags == 0 and name_len == 0:
            return tags
        name = data[at + 2 : at + 2 + name_len]
        at += 2 + name_len
        count = (flags >> 6) & 3
        raw_indices = data[at : at + 4 * count]
        at += 4 * count
        size = flags & 0x3F
        if size in (62, 63):
            word = 4 if version == 0 else 8
            blob = int.from_bytes(data[at : at + word], "little")
            at += 2 * word + 2 + blob
        else:
            if size <= 8 and at + size <= len(data) and len(raw_indices) == 4 * count:
                indices = struct.unpack(f"<{count}I", raw_indices)
                tags[(name, indices)] = int.from_bytes(data[at : at + size], "little")
            at += size
        if at > len(data):
            raise SourceError(path, f"checkpoint tag {name!r} runs past end of file")
    raise SourceError(path, f"more than {MAX_TAGS} tags in the checkpoint's memory group")


def _regions(path: str, tags: Tags) -> list[Segment]:
    count = tags.get((b"regionsCount", ()), 0)
    if count > MAX_REGIONS:
        raise SourceError(path, f"regionsCount {count} (limit {MAX_REGIONS})")
    regions = []
    for i in range(count):
        values = [tags.get((name, (i,))) for name in _REGION_TAGS]
        if None in values:
            missing = [n.decode() for n, v in zip(_REGION_TAGS, values, strict=True) if v is None]
            raise SourceError(path, f"memory region {i} has no {', '.join(missing)} tag")
        ppn, page_num, pages = (v or 0 for v in values)
        regions.append(Segment(ppn * PAGE, page_num * PAGE, pages * PAGE))
    return regions
