"""Guest physical memory as a target: one chunkable unit per range of the source's address map."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager

from scanner.acquisition.memory import MemorySource, open_memory
from scanner.errors import InvalidArgument, SourceError
from scanner.targets.base import Skipped, Target, Unit
from scanner.targets.identity import settled_identity
from scanner.verdicts import GapKind


class PhysicalRangeUnit(Unit):
    kind = "memory"
    chunkable = True

    def __init__(self, source: MemorySource, start: int, length: int) -> None:
        self.source = source
        self.base = start
        self.size = length
        self.name = f"{source.name}@phys:{start:#x}-{start + length:#x}"

    def window(self, offset: int, length: int) -> AbstractContextManager[memoryview]:
        return self.source.window(self.base + offset, length)

    def physical(self, offset: int) -> int | None:
        return self.base + offset

    def holes(self) -> Sequence[tuple[int, int]]:
        return [(a - self.base, b - self.base) for a, b in self.source.holes(self.base, self.size)]


def memory_identity(mode: str, source: MemorySource, *extra: str) -> bytes | None:
    """The identity of a scan of ``source`` in ``mode``: the stamps of its files and of the
    ``extra`` files the scan also reads (a kernel image), or None."""
    files = list(source.files())
    if not files:
        return None
    return settled_identity("memory", [mode, source.format, source.size], [*files, *extra])


def open_source(params: Mapping[str, object]) -> MemorySource:
    """The memory source named by ``path`` and ``format`` (default auto) params."""
    path = params.get("path")
    fmt = params.get("format", "auto") or "auto"
    if not isinstance(path, str) or not path:
        raise InvalidArgument("target.memory.path", "a memory image path is required")
    if not isinstance(fmt, str):
        raise InvalidArgument("target.memory.format", "must be a string")
    source = open_memory(path, fmt)
    if source.size == 0 and not source.unreadable():  # nothing to scan is never a CLEAN scan
        source.close()
        raise SourceError(path, f"no guest memory in it (a {source.format} image holding 0 bytes of RAM)")
    return source


class MemoryTarget(Target):
    """A memory image or live guest RAM, scanned physically."""

    kind = "memory"

    def __init__(self, source: MemorySource) -> None:
        self.source = source

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> MemoryTarget:
        return cls(open_source(params))

    def plan(self) -> Iterator[Unit | Skipped]:
        for r in self.source.ranges():
            yield PhysicalRangeUnit(self.source, r.start, r.length)
        for r, reason in self.source.unreadable():
            yield Skipped(f"{self.source.name}@phys:{r.start:#x}", r.length, GapKind.UNREADABLE, reason)

    def details(self) -> Mapping[str, str]:
        return {"memory.format": self.source.format, "memory.bytes": str(self.source.size)}

    def identity(self) -> bytes | None:
        """A dump whose files have all settled (never a live guest: its source lists no files)."""
        return memory_identity(type(self).__name__, self.source)

    def close(self) -> None:
        self.source.close()
