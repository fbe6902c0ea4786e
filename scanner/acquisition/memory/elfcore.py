"""QEMU ELF core (``dump-guest-memory``, also ``virsh dump --memory-only``, ``crash`` cores).

The ELF header and program headers are parsed here with :mod:`struct` (ELF32 and ELF64, either
byte order; ``PN_XNUM`` extended counts). Every ``PT_LOAD`` segment stores ``p_filesz`` bytes of
physical memory at ``p_paddr`` from file offset ``p_offset``; the address map is the union of
those segments (see :mod:`~scanner.acquisition.memory.segmented` for joins, overlaps and
truncation). Other program headers (``PT_NOTE``: CPU state) are ignored.

Hostile input: the program header table is bounded (``MAX_PHDRS``) and must lie inside the file;
``p_memsz`` beyond ``p_filesz`` (memory QEMU did not dump, e.g. a filtered or MMIO mapping) is
``unreadable()``, not zeros; ``p_filesz > p_memsz`` or an address overflow is a
:class:`~scanner.errors.SourceError` naming the program header.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from scanner.acquisition.memory.base import PhysRange
from scanner.acquisition.memory.segmented import PHYS_LIMIT, Layout, Segment, SegmentedDump
from scanner.errors import SourceError

ELF_MAGIC = b"\x7fELF"
ET_CORE = 4
PT_LOAD = 1
PN_XNUM = 0xFFFF
MAX_PHDRS = 1 << 16


@dataclass(frozen=True)
class _Shape:
    """Where the fields sit for one ELF class."""

    ehdr: str  # after e_ident: e_type .. e_shstrndx
    phdr: str
    phdr_fields: tuple[int, int, int, int, int]  # indexes of p_type, p_offset, p_paddr, p_filesz, p_memsz
    sh_info_at: int  # byte offset of sh_info in a section header


_SHAPES = {
    1: _Shape("HHIIIIIHHHHHH", "IIIIIIII", (0, 1, 3, 4, 5), 28),
    2: _Shape("HHIQQQIHHHHHH", "IIQQQQQQ", (0, 2, 4, 5, 6), 44),
}


@dataclass(frozen=True)
class ProgramHeader:
    index: int
    type: int
    offset: int
    paddr: int
    filesz: int
    memsz: int


class ElfCoreMemory(SegmentedDump):
    """Guest physical memory from an ELF core's ``PT_LOAD`` segments (by ``p_paddr``)."""

    format = "elfcore"

    def _layout(self) -> Layout:
        segments: list[Segment] = []
        absent: list[tuple[PhysRange, str]] = []
        for ph in self.program_headers():
            if ph.type != PT_LOAD:
                continue
            where = f"PT_LOAD #{ph.index} (phys {ph.paddr:#x})"
            if ph.filesz > ph.memsz:
                raise SourceError(self.name, f"{where}: p_filesz {ph.filesz:#x} > p_memsz {ph.memsz:#x}")
            if ph.paddr + ph.memsz > PHYS_LIMIT or ph.offset + ph.filesz > PHYS_LIMIT:
                raise SourceError(self.name, f"{where}: segment runs past the 64-bit address space")
            segments.append(Segment(ph.paddr, ph.offset, ph.filesz))
            if ph.memsz > ph.filesz:
                reason = f"{where}: p_memsz {ph.memsz:#x} > p_filesz {ph.filesz:#x}, the rest is not in the dump"
                absent.append((PhysRange(ph.paddr + ph.filesz, ph.memsz - ph.filesz), reason))
        if not segments:
            raise SourceError(self.name, "ELF core has no PT_LOAD segments")
        return Layout(segments, absent)

    def program_headers(self) -> list[ProgramHeader]:
        """Every program header of the core, bounds-checked against the file."""
        ident = self.read_header(0, 16)
        if len(ident) < 16 or ident[:4] != ELF_MAGIC:
            raise SourceError(self.name, "not an ELF file (bad magic)")
        shape = _SHAPES.get(ident[4])
        order = {1: "<", 2: ">"}.get(ident[5])
        if shape is None or order is None:
            raise SourceError(self.name, f"unsupported ELF class {ident[4]} / data encoding {ident[5]}")
        ehdr_fmt = order + shape.ehdr
        raw = self.read_header(16, struct.calcsize(ehdr_fmt))
        if len(raw) < struct.calcsize(ehdr_fmt):
            raise SourceError(self.name, "ELF header is truncated")
        e_type, _, _, _, phoff, shoff, _, _, phentsize, phnum, _, _, _ = struct.unpack(ehdr_fmt, raw)
        if e_type != ET_CORE:
            raise SourceError(self.name, f"ELF type {e_type} is not a core file (ET_CORE = {ET_CORE})")
        if phnum == PN_XNUM:
            phnum = self._extended_phnum(order, shape, shoff)
        phdr_fmt = order + shape.phdr
        if phentsize < struct.calcsize(phdr_fmt) or phentsize > 256:
            raise SourceError(self.name, f"e_phentsize {phentsize} is invalid")
        if phnum > MAX_PHDRS:
            raise SourceError(self.name, f"{phnum} program headers (limit {MAX_PHDRS})")
        table = self.read_header(phoff, phnum * phentsize)
        if len(table) < phnum * phentsize:
            raise SourceError(
                self.name,
                f"program header table at {phoff:#x} ({phnum} x {phentsize} bytes) is past end of file",
            )
        t, o, p, f, m = shape.phdr_fields
        out = []
        for i in range(phnum):
            fields = struct.unpack_from(phdr_fmt, table, i * phentsize)
            out.append(ProgramHeader(i, fields[t], fields[o], fields[p], fields[f], fields[m]))
        return out

    def _extended_phnum(self, order: str, shape: _Shape, shoff: int) -> int:
        """With ``e_phnum == PN_XNUM`` the real count is section header 0's ``sh_info``."""
        raw = self.read_header(shoff + shape.sh_info_at, 4)
        if shoff == 0 or len(raw) < 4:
            raise SourceError(self.name, f"e_phnum is PN_XNUM but section header 0 at {shoff:#x} is missing")
        count: int = struct.unpack(order + "I", raw)[0]
        return count
