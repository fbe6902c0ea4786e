"""Raw physical memory: a plain dump (``pmemsave``, ``dd`` of /dev/mem) or a live RAM file.

File offset equals physical address; the map is one range, the file's size at open time. A
file that shrinks while it is scanned (a guest that stopped, a dump being rewritten) gives
unreadable windows, never silently short reads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager

from scanner.acquisition.hostfile import open_host_file
from scanner.acquisition.mapped import file_holes, file_window, holes_within, pread_gather
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
        self._holes: list[tuple[int, int]] | None = None
        self._holes_lock = threading.Lock()

    def _ranges(self) -> Sequence[PhysRange]:
        return [PhysRange(0, self._size)]

    def _window(self, address: int, length: int) -> AbstractContextManager[memoryview]:
        return file_window(self._fd, address, length, self.name, holes=True, known=self._file_holes())

    def files(self) -> Sequence[str]:
        """The image file (a running guest's RAM file never settles, and tmpfs is never trusted)."""
        return (self.name,)

    def gather(self, physicals: bytes, lengths: bytes, dst: bytearray) -> bool:
        """File offset = physical address: the runs are read straight from the file (``pread``:
        a hole reads as zeros and stays a hole); past the end of the file is unreadable."""
        return pread_gather(self._fd, self.name, physicals, lengths, dst)

    def holes(self, address: int, length: int) -> Sequence[tuple[int, int]]:
        return holes_within(self._file_holes(), address, address + length) if self._fd >= 0 else ()

    def _file_holes(self) -> list[tuple[int, int]]:
        """The file's holes, asked for once per source (``SEEK_HOLE`` per window costs time in
        proportion to the rest of a populated tmpfs file: quadratic over a scan). A hole a live
        guest fills later reads as zeros, as if that page had been read earlier."""
        with self._holes_lock:
            if self._holes is None:
                self._holes = file_holes(self._fd, 0, self._size, limit=1 << 20)
            return self._holes

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
