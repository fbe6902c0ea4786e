"""Builders for small synthetic dump files: ELF cores and VMware .vmem + .vmsn pairs.

Each builder writes the exact bytes the format describes, so tests can lie in any header field.
(LiME files are made with the product's own ``to_lime`` or with ``lime_header`` here.)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from scanner.acquisition.memory.lime import HEADER as LIME_HEADER
from scanner.acquisition.memory.lime import LIME_MAGIC

PAGE = 0x1000


def pattern(seed: int, length: int) -> bytes:
    """Distinct, non-zero, position-dependent bytes, so a read from the wrong place shows."""
    block = bytes((seed * 31 + i * 7 + (i >> 8)) % 251 + 1 for i in range(4096))
    return (block * (length // 4096 + 1))[:length]


# -- ELF cores -------------------------------------------------------------------------------


@dataclass
class Load:
    """One PT_LOAD: ``data`` of physical memory at ``paddr``. Overrides make it lie."""

    paddr: int
    data: bytes
    memsz: int | None = None  # default len(data)
    filesz: int | None = None  # default len(data)
    offset: int | None = None  # default: placed after the previous segment's data


def elf_core(
    path: Path,
    loads: list[Load],
    *,
    elf_class: int = 64,
    big_endian: bool = False,
    e_type: int = 4,
    phnum: int | None = None,
    xnum: bool = False,
    sh_info: int | None = None,
) -> Path:
    """Write an ELF core: header, a PT_NOTE, one PT_LOAD per ``loads``, then the data.

    ``xnum`` stores the program header count in section header 0 (``PN_XNUM``); ``phnum`` and
    ``sh_info`` override the count the header claims.
    """
    order = ">" if big_endian else "<"
    if elf_class == 64:
        ehdr, phdr, shdr = order + "HHIQQQIHHHHHH", order + "IIQQQQQQ", order + "IIQQQQIIQQ"
    else:
        ehdr, phdr, shdr = order + "HHIIIIIHHHHHH", order + "IIIIIIII", order + "IIIIIIIIII"
    ehsize = 16 + struct.calcsize(ehdr)
    phentsize = struct.calcsize(phdr)
    count = len(loads) + 1
    shoff = ehsize + count * phentsize if xnum else 0
    data_at = ehsize + count * phentsize + (struct.calcsize(shdr) if xnum else 0)
    note = b"CORE\0\0\0\0"
    headers = [(5, data_at, 0, len(note), len(note))]  # p_type, offset, paddr, filesz, memsz
    blob = bytearray(note)
    for load in loads:
        offset = load.offset if load.offset is not None else data_at + len(blob)
        if load.offset is None:
            blob += load.data
        filesz = load.filesz if load.filesz is not None else len(load.data)
        memsz = load.memsz if load.memsz is not None else len(load.data)
        headers.append((1, offset, load.paddr, filesz, memsz))
    out = bytearray(b"\x7fELF" + bytes([1 if elf_class == 32 else 2, 2 if big_endian else 1, 1]) + bytes(9))
    e_phnum = 0xFFFF if xnum else (phnum if phnum is not None else count)
    out += struct.pack(ehdr, e_type, 62, 1, 0, ehsize, shoff, 0, ehsize, phentsize, e_phnum, 0, 0, 0)
    for p_type, offset, paddr, filesz, memsz in headers:
        if elf_class == 64:
            out += struct.pack(phdr, p_type, 0, offset, 0, paddr, filesz, memsz, 0)
        else:
            out += struct.pack(phdr, p_type, offset, 0, paddr, filesz, memsz, 0, 0)
    if xnum:
        out += struct.pack(shdr, 0, 0, 0, 0, 0, 0, 0, count if sh_info is None else sh_info, 0, 0)
    out += blob
    for load in loads:  # data for segments placed by explicit offset
        if load.offset is not None:
            end = load.offset + len(load.data)
            if len(out) < end:
                out += bytes(end - len(out))
            out[load.offset : end] = load.data
    path.write_bytes(bytes(out))
    return path


# -- LiME ------------------------------------------------------------------------------------


def lime_header(start: int, last: int, magic: int = LIME_MAGIC, version: int = 1) -> bytes:
    return LIME_HEADER.pack(magic, version, start, last, bytes(8))


def lime_file(path: Path, ranges: list[tuple[int, bytes]]) -> Path:
    """LiME ranges ``(physical start, data)`` in file order."""
    path.write_bytes(b"".join(lime_header(s, s + len(d) - 1) + d for s, d in ranges))
    return path


# -- VMware ----------------------------------------------------------------------------------


def _tag(name: bytes, value: int | bytes, indices: tuple[int, ...] = (), version: int = 2) -> bytes:
    """One checkpoint tag: u32 value (4 data bytes), or a blob for ``bytes``."""
    head = b"".join(struct.pack("<I", i) for i in indices)
    if isinstance(value, bytes):
        word = "<I" if version == 0 else "<Q"
        flags = (len(indices) << 6) | 62
        sized = struct.pack(word, len(value)) * 2 + b"\0\0" + value
        return bytes([flags, len(name)]) + name + head + sized
    flags = (len(indices) << 6) | 4
    return bytes([flags, len(name)]) + name + head + struct.pack("<I", value)


def vmsn(
    path: Path,
    regions: list[tuple[int, int, int]],
    *,
    magic: bytes = b"\xd2\xbe\xd2\xbe",
    count: int | None = None,
    drop: tuple[bytes, int] | None = None,
    memory_group: bytes = b"memory",
) -> Path:
    """A checkpoint whose memory group declares ``regions`` as (ppn, page_num, pages).

    Around the region tags sit tags a reader must skip (indexed, blob, other sizes); ``count``
    overrides ``regionsCount``; ``drop`` leaves out one (tag name, region index).
    """
    version = magic[0] & 0xF
    tags = [
        _tag(b"align_mask", 0xFFFF, version=version),
        _tag(b"Memory", b"\xaa" * 300, version=version),
        _tag(b"regionsCount", len(regions) if count is None else count, version=version),
    ]
    for i, (ppn, page_num, pages) in enumerate(regions):
        for name, value in ((b"regionPPN", ppn), (b"regionPageNum", page_num), (b"regionSize", pages)):
            if drop != (name, i):
                tags.append(_tag(name, value, (i,), version))
        tags.append(_tag(b"hotSetSize", 7, (i, 1), version))
    groups = [b"cpu", memory_group]
    header = struct.pack("<4sII", magic, 0, len(groups))
    table_end = len(header) + 80 * len(groups)
    cpu = _tag(b"cpuid", 1, (0,), version) + b"\0\0"
    memory_at = table_end + len(cpu)
    table = struct.pack("<64sQQ", b"cpu", table_end, 0) + struct.pack("<64sQQ", memory_group, memory_at, 0)
    path.write_bytes(header + table + cpu + b"".join(tags) + b"\0\0")
    return path
