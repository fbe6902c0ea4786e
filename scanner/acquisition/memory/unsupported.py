"""Dumps whose format is recognised but not read: nothing scanned, the whole file a named gap.

Scanning such a file as raw bytes would look complete while its pages are compressed or laid out
in a way the engine cannot see through (a hibernation file's Xpress blocks, a QEMU migration
stream's page records), so the verdict would read CLEAN with malware present. Instead the file
is one unreadable range naming the format: the scan is INCOMPLETE with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager

from scanner.acquisition.memory.base import MemorySource, PhysRange
from scanner.errors import SourceError, UnreadableError

# Leading bytes -> what the file is, for formats that are recognised but not read.
KNOWN: dict[bytes, str] = {
    b"hibr": "Windows hibernation file (hiberfil.sys)",
    b"HIBR": "Windows hibernation file (hiberfil.sys)",
    b"wake": "Windows hibernation file (hiberfil.sys, resumed)",
    b"WAKE": "Windows hibernation file (hiberfil.sys, resumed)",
    b"RSTR": "Windows hibernation file (hiberfil.sys, restoring)",
    b"QEVM": "QEMU migration stream (savevm / migrate to file)",
    b"MDMP": "Windows minidump (process memory, not guest physical memory)",
}


def recognise(head: bytes) -> str:
    """What a file starting with ``head`` is, when it is a known format this package does not read."""
    return KNOWN.get(head[:4], "")


class UnsupportedDump(MemorySource):
    """A recognised dump format that is not read: no address map, the whole file unreadable."""

    format = "unsupported"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SourceError(path, f"cannot open memory image: {e.strerror}") from e
        try:
            self.file_size = os.fstat(fd).st_size
            self.what = recognise(os.pread(fd, 4, 0)) or "unrecognised dump format"
        finally:
            os.close(fd)

    def _ranges(self) -> Sequence[PhysRange]:
        return ()

    def unreadable(self) -> Sequence[tuple[PhysRange, str]]:
        return [(PhysRange(0, max(1, self.file_size)), f"{self.what}: this format is not supported; not scanned")]

    def _window(self, address: int, length: int) -> AbstractContextManager[memoryview]:
        raise UnreadableError(self.name, address, length, f"{self.what}: not supported")
