"""Image files opened read-only, with truncation made loud.

Parsers read container tables and grains through :class:`StrictFile`. A plain file returns fewer
bytes at its end and a parser would carry on with short or shifted data; here a read of ``n > 0``
bytes that gets fewer raises :class:`TruncatedImage` naming the file and offset, which the walk
then reports as a gap for the file or directory being read. Reads of "the rest" (``read()``)
are not checked.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from scanner.acquisition.disk.errors import TruncatedImage


class StrictFile(io.RawIOBase):
    """A read-only, seekable view of a file (or block device) that refuses short reads."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = str(self.path)  # dissect uses ``name`` to find sibling files (extents, parents)
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self.path, flags)
        self._pos = 0
        self.size = os.lseek(self._fd, 0, os.SEEK_END)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise OSError(f"{self.path}: negative seek to {pos}")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            data = os.pread(self._fd, max(0, self.size - self._pos), self._pos)
            self._pos += len(data)
            return data
        if size == 0:
            return b""
        data = os.pread(self._fd, size, self._pos)
        if len(data) < size:
            raise TruncatedImage(
                f"{self.path}: read of {size} bytes at {self._pos:#x} ends past the end of the image "
                f"({self.size} bytes): truncated image or a table pointing past its end"
            )
        self._pos += size
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
