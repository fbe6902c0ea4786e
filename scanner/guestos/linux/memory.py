"""Reading guest virtual memory through page tables, for walkers: small typed reads that check everything.

:class:`VirtualMemory` wraps a :class:`~scanner.guestos.linux.paging.PageTables` and raises
:class:`~scanner.guestos.problems.WalkError` for anything it cannot read (non-canonical pointer,
page not present, table outside RAM) instead of guessing.
"""

from __future__ import annotations

import struct

from scanner.errors import UnreadableError
from scanner.guestos.linux.paging import PAGE, PageTables, is_canonical
from scanner.guestos.problems import WalkError

KERNEL_SPACE = 0xFFFF_8000_0000_0000
MAX_READ = 1 << 20


class VirtualMemory:
    """One address space (the kernel's, or a process's)."""

    def __init__(self, tables: PageTables) -> None:
        self.tables = tables
        self.source = tables.source
        self._pages: dict[int, int | None] = {}
        self.paths: dict[tuple[int, int], str] = {}  # (dentry, vfsmount) -> path, for scanner.guestos.linux.paths

    def physical(self, virtual: int) -> int:
        page = virtual & ~(PAGE - 1)
        if page not in self._pages:
            if len(self._pages) > 1 << 16:
                self._pages.clear()
            self._pages[page] = self.tables.translate(page) if is_canonical(page, self.tables.levels) else None
        base = self._pages[page]
        if base is None:
            raise WalkError("address not mapped", virtual)
        return base + (virtual & (PAGE - 1))

    def read(self, virtual: int, length: int) -> bytes:
        if not 0 <= length <= MAX_READ:
            raise WalkError(f"read of {length} bytes refused", virtual)
        out = bytearray()
        while len(out) < length:
            v = virtual + len(out)
            n = min(length - len(out), PAGE - (v & (PAGE - 1)))
            try:
                with self.source.window(self.physical(v), n) as view:
                    out += view
            except UnreadableError as e:
                raise WalkError(f"unreadable: {e.reason}", v) from e
        return bytes(out)

    def u64(self, virtual: int) -> int:
        return int(struct.unpack("<Q", self.read(virtual, 8))[0])

    def u32(self, virtual: int) -> int:
        return int(struct.unpack("<I", self.read(virtual, 4))[0])

    def i32(self, virtual: int) -> int:
        return int(struct.unpack("<i", self.read(virtual, 4))[0])

    def pointer(self, virtual: int, what: str, nullable: bool = False) -> int:
        """A kernel pointer read at ``virtual``; 0 only if ``nullable``; else it must be a kernel address."""
        value = self.u64(virtual)
        if value == 0 and nullable:
            return 0
        if value < KERNEL_SPACE or not is_canonical(value, self.tables.levels):
            raise WalkError(f"{what}: bad kernel pointer {value:#x}", virtual)
        return value

    def cstring(self, virtual: int, limit: int) -> bytes:
        """A NUL-terminated string of at most ``limit`` bytes (read page by page)."""
        out = bytearray()
        while len(out) < limit:
            v = virtual + len(out)
            n = min(limit - len(out), PAGE - (v & (PAGE - 1)))
            chunk = self.read(v, n)
            end = chunk.find(b"\0")
            if end >= 0:
                return bytes(out + chunk[:end])
            out += chunk
        return bytes(out)
