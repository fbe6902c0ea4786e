"""Raw physical memory: a plain dump (``pmemsave``, ``dd`` of /dev/mem) or a live RAM file.

File offset equals physical address; the map is one range, the file's size at open time. A
file that shrinks while it is scanned (a guest that stopped, a dump being rewritten) gives
unreadable windows, never silently short reads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager

from scanner.acquisition.hostfile import open_host_file
from scanner.acquisition.mapped import file_holes, file_window, pread_gather
from scanner.acquisition.memory.base import MemorySource, PhysRange
from scanner.errors import SourceError


class RawMemory(MemorySource):
    format = "raw"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        opened = open_host_file(path, "memory image", follow=True, block_devices=True)
        self._fd, self._size = opened.fd, opened.size
        if self._size == 0:
            os.close(self._fd)
            raise SourceError(path, "memory image is empty")

    def _ranges(self) -> Sequence[PhysRange]:
        return [PhysRange(0, self._size)]

    def _window(self, address: int, length: int) -> AbstractContextManager[memoryview]:
        return file_window(self._fd, address, length, self.name, holes=True)

    def files(self) -> Sequence[str]:
        """The image file (a running guest's RAM file never settles, and tmpfs is never trusted)."""
        return (self.name,)

    def gather(self, physicals: bytes, lengths: bytes, dst: bytearray) -> bool:
        """File offset = physical address: the runs are read straight from the file (``pread``:
        a hole reads as zeros and stays a hole); past the end of the file is unreadable."""
        return pread_gather(self._fd, self.name, physicals, lengths, dst)

    def holes(self, address: int, length: int) -> Sequence[tuple[int, int]]:
        return file_holes(self._fd, address, length) if self._fd >= 0 else ()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
