"""A buffer sent by a caller (``ScanBytes``): one unit with file semantics, held in memory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from scanner.errors import UnreadableError
from scanner.targets.base import Skipped, Target, Unit


class BufferUnit(Unit):
    kind = "buffer"

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.size = len(data)
        self._data = data
        self.externals = {"filename": name, "filepath": "", "extension": "", "filetype": "", "owner": ""}

    def window(self, offset: int, length: int) -> AbstractContextManager[memoryview]:
        return self._view(offset, length)

    @contextmanager
    def _view(self, offset: int, length: int) -> Iterator[memoryview]:
        if offset < 0 or offset + length > self.size:
            raise UnreadableError(self.name, offset, length, "outside the buffer")
        with memoryview(self._data) as whole:
            view = whole[offset : offset + length]
            try:
                yield view
            finally:
                view.release()


class BufferTarget(Target):
    kind = "buffer"

    def __init__(self, name: str, data: bytes) -> None:
        self.unit = BufferUnit(name, data)

    def plan(self) -> Iterator[Unit | Skipped]:
        yield self.unit
