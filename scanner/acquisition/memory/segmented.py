"""Dump files whose header maps physical memory to file offsets (ELF core, LiME, VMware).

A backend parses its header into :class:`Segment` records (``length`` bytes of physical memory at
``phys`` stored at file ``offset``) plus ranges its header declares but does not store; this base
turns them into the address map and zero-copy windows. Hostile headers are handled here, once:

- a segment running past the end of the file keeps its stored part; the rest is ``unreadable()``
  with the reason (the file is truncated or the header lies);
- segments that overlap and disagree about where the overlap is stored (different
  ``phys - offset``) raise :class:`~scanner.errors.SourceError` naming both addresses; overlaps
  that agree (QEMU's paging dumps repeat a physical page in several program headers) are merged;
- declared-but-absent ranges are unreadable only where no segment supplies the bytes.

**Segment joins.** Segments adjacent in both physical address and file offset become one
segment. Segments adjacent only in physical address stay separate segments but form *one*
range of the map, so a signature straddling the seam is still found: a window inside one
segment is a zero-copy ``mmap`` view; a window across a seam is assembled from its pieces
into a private buffer (a copy of at most the window's length).
"""

from __future__ import annotations

import abc
import bisect
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass

from scanner.acquisition.hostfile import open_host_file
from scanner.acquisition.mapped import file_window
from scanner.acquisition.memory.base import MemorySource, PhysRange
from scanner.errors import SourceError, UnreadableError

MAX_SEGMENTS = 1 << 16
PHYS_LIMIT = 1 << 64


@dataclass(frozen=True, order=True)
class Segment:
    """``length`` bytes of physical memory at ``phys``, stored at file ``offset``."""

    phys: int
    offset: int
    length: int

    @property
    def phys_end(self) -> int:
        return self.phys + self.length

    @property
    def delta(self) -> int:
        return self.phys - self.offset


@dataclass(frozen=True)
class Layout:
    """What a backend's header says: the stored segments and the declared-but-absent ranges."""

    segments: Sequence[Segment]
    absent: Sequence[tuple[PhysRange, str]] = ()


class SegmentedDump(MemorySource):
    """A dump file read through a physical-to-file segment table. Backends implement ``_layout``."""

    def __init__(self, path: str, data_path: str | None = None) -> None:
        """Open ``data_path`` (default ``path``) and parse the layout; ``path`` names the source."""
        super().__init__(path)
        self.data_path = data_path or path
        opened = open_host_file(self.data_path, "memory image", follow=self.data_path == path)
        self._fd = opened.fd
        try:
            self.file_size = opened.size
            layout = self._layout()
            self._segs, self._gaps = _resolve(self.name, layout, self.file_size)
        except BaseException:
            self.close()
            raise
        self._starts = [s.phys for s in self._segs]

    @abc.abstractmethod
    def _layout(self) -> Layout:
        """Parse the header(s) into segments; raise :class:`SourceError` for a malformed one."""

    def read_header(self, offset: int, length: int) -> bytes:
        """``length`` bytes of the data file at ``offset`` for header parsing (short at EOF)."""
        if offset < 0 or offset >= self.file_size or length <= 0:
            return b""
        try:
            return os.pread(self._fd, min(length, self.file_size - offset), offset)
        except OSError as e:
            raise SourceError(self.data_path, f"cannot read header at {offset:#x}: {e.strerror}") from e

    def segments(self) -> Sequence[Segment]:
        """The stored segments, sorted by physical address, merged where contiguous in both."""
        return self._segs

    def unreadable(self) -> Sequence[tuple[PhysRange, str]]:
        return self._gaps

    def files(self) -> Sequence[str]:
        """The dump (headers) and the file holding its data, when they differ (VMware)."""
        return tuple(dict.fromkeys((self.name, self.data_path)))

    def _ranges(self) -> Sequence[PhysRange]:
        out: list[PhysRange] = []
        for s in self._segs:
            if out and out[-1].end == s.phys:
                out[-1] = PhysRange(out[-1].start, out[-1].length + s.length)
            else:
                out.append(PhysRange(s.phys, s.length))
        return out

    def _window(self, address: int, length: int) -> AbstractContextManager[memoryview]:
        return self._view(address, length)

    @contextmanager
    def _view(self, address: int, length: int) -> Iterator[memoryview]:
        i = bisect.bisect_right(self._starts, address) - 1
        seg = self._segs[i]
        if address + length <= seg.phys_end:
            with self._piece(seg, address, length) as view:
                yield view
            return
        buf = bytearray(length)
        done = 0
        while done < length:
            if i >= len(self._segs) or (done and self._segs[i].phys != address + done):
                raise UnreadableError(self.name, address + done, length - done, "no segment holds it")
            seg = self._segs[i]
            n = min(length - done, seg.phys_end - (address + done))
            with self._piece(seg, address + done, n) as piece:
                buf[done : done + n] = piece
            done += n
            i += 1
        view = memoryview(buf).toreadonly()
        try:
            yield view
        finally:
            view.release()

    @contextmanager
    def _piece(self, seg: Segment, address: int, length: int) -> Iterator[memoryview]:
        offset = address - seg.delta
        with ExitStack() as stack:
            try:
                view = stack.enter_context(file_window(self._fd, offset, length, self.data_path))
            except UnreadableError as e:
                raise UnreadableError(self.name, address, length, f"file offset {offset:#x}: {e.reason}") from e
            yield view

    def close(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1


def _resolve(name: str, layout: Layout, file_size: int) -> tuple[list[Segment], list[tuple[PhysRange, str]]]:
    """Check, clip to the file and merge a backend's layout (see the module contract)."""
    if len(layout.segments) > MAX_SEGMENTS:
        raise SourceError(name, f"{len(layout.segments)} segments (limit {MAX_SEGMENTS})")
    for s in layout.segments:
        if s.phys < 0 or s.offset < 0 or s.length < 0 or s.phys_end > PHYS_LIMIT:
            raise SourceError(name, f"invalid segment: phys {s.phys:#x}, offset {s.offset:#x}, {s.length:#x} bytes")
    segs = _merge(name, sorted(s for s in layout.segments if s.length > 0))
    stored: list[Segment] = []
    absent = [(r, why) for r, why in layout.absent if r.length > 0]
    for s in segs:
        keep = max(0, min(s.length, file_size - s.offset))
        if keep:
            stored.append(Segment(s.phys, s.offset, keep))
        if keep < s.length:
            reason = (
                f"file ends at {file_size:#x} but the header puts {s.length - keep:#x} bytes of "
                f"phys {s.phys + keep:#x} at offset {s.offset + keep:#x} (truncated dump)"
            )
            absent.append((PhysRange(s.phys + keep, s.length - keep), reason))
    return stored, _absent_gaps(stored, absent)


def _merge(name: str, segs: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for s in segs:
        last = out[-1] if out else None
        if last is None or s.phys > last.phys_end or (s.phys == last.phys_end and s.delta != last.delta):
            out.append(s)
        elif s.delta == last.delta:
            out[-1] = Segment(last.phys, last.offset, max(last.phys_end, s.phys_end) - last.phys)
        else:
            raise SourceError(
                name,
                f"overlapping segments store different data for the same memory: phys "
                f"{last.phys:#x}-{last.phys_end:#x} at offset {last.offset:#x} and phys "
                f"{s.phys:#x}-{s.phys_end:#x} at offset {s.offset:#x}",
            )
    return out


def _absent_gaps(stored: list[Segment], absent: list[tuple[PhysRange, str]]) -> list[tuple[PhysRange, str]]:
    """Declared-absent ranges minus what a stored segment supplies, sorted and non-overlapping."""
    starts = [s.phys for s in stored]
    out: list[tuple[PhysRange, str]] = []
    for r, why in sorted(absent, key=lambda a: (a[0].start, a[0].length)):
        lo = max(r.start, out[-1][0].end) if out else r.start
        i = max(0, bisect.bisect_right(starts, lo) - 1)
        while lo < r.end:
            seg = stored[i] if i < len(stored) else None
            if seg is not None and seg.phys_end <= lo:
                i += 1
                continue
            hi = r.end if seg is None else min(r.end, max(lo, seg.phys))
            if lo < hi:
                out.append((PhysRange(lo, hi - lo), why))
            if seg is None or seg.phys >= r.end:
                break
            lo = seg.phys_end
            i += 1
    return out
