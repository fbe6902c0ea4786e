"""Process-aware memory scanning: one unit per present run of each process region (VMA), plus the kernel.

Over any :class:`~scanner.acquisition.memory.MemorySource`, the target finds the running Linux
kernel from memory alone (:mod:`scanner.guestos.linux`), walks its processes and their regions,
and offers each region's pages through the process's own page tables. Units are in **virtual**
addresses (``base`` = first address of the run); ``physical(offset)`` translates, so a finding
names pid, process, region, virtual and physical address.

Contract:
- A region whose pages are all present is one unit whose ``base`` is ``vm_start``; a page that is
  not present splits it. Pages never populated (page-table entry 0: untouched anonymous memory
  reads as zeros, file pages not resident are not in this process's memory) are accounted as
  skipped without making the scan INCOMPLETE; pages swapped out or otherwise not present (a
  non-zero entry), and page tables or pages outside guest memory, are gaps with the reason.
- Everything a walker could not follow (a looping task list, an absurd VMA tree, a bad pointer)
  is a gap with the reason, so the verdict is INCOMPLETE, never CLEAN and never a crash.
- Kernel memory is scanned too: the mapped pages of the kernel image and of the modules area,
  less the physical pages a process region already offered (the image's large pages also map
  freed memory that processes now use: a hit there is attributed to the process, once).
- No Linux kernel or no profile: the target falls back to the plain physical scan and says so
  in ``details()["os"]``.
"""

from __future__ import annotations

import array
import bisect
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.acquisition.memory import MemorySource, open_memory
from scanner.errors import InvalidArgument
from scanner.guestos.linux.detect import Detection, open_linux
from scanner.guestos.linux.kaslr import KERNEL_MAP, KERNEL_MAP_END, MODULES_END
from scanner.guestos.linux.kernel import LinuxKernel
from scanner.guestos.linux.modules import modules
from scanner.guestos.linux.paging import PAGE, BadEntry, NotPresent, PageTables, Piece, runs
from scanner.guestos.linux.paging import Mapping as PageMapping
from scanner.guestos.linux.regions import KernelRegions, kernel_regions
from scanner.guestos.linux.tasks import Process
from scanner.guestos.linux.vmas import Vma
from scanner.guestos.problems import WalkError
from scanner.targets.base import Skipped, Target, Unit
from scanner.targets.memory import MemoryTarget, memory_identity
from scanner.verdicts import GapKind


@dataclass(frozen=True)
class Segment:
    """``size`` bytes at unit offset ``offset`` are at guest physical ``physical``."""

    offset: int
    physical: int
    size: int


class VirtualRunUnit(Unit):
    """Virtually contiguous present pages of one region, read through the page tables."""

    chunkable = True

    def __init__(
        self, source: MemorySource, kind: str, name: str, base: int, segments: list[Segment], context: Mapping[str, str]
    ) -> None:
        self.source = source
        self.kind = kind
        self.name = name
        self.base = base
        self.segments = segments
        self._starts = [s.offset for s in segments]
        self._physicals = array.array("Q", [s.physical for s in segments])  # for native gathers
        self._sizes = array.array("Q", [s.size for s in segments])
        self.size = segments[-1].offset + segments[-1].size
        self.context = context
        self.namer: Callable[[int], str] | None = None  # kernel units: names the module or region

    def attribute(self, offsets: Sequence[int]) -> Mapping[str, str]:
        """Kernel units: ``kernel_region`` names the module or kernel image part of the first match."""
        if self.namer is None:
            return {}
        return {"kernel_region": self.namer(self.base + (offsets[0] if offsets else 0))}

    def _segment(self, offset: int) -> Segment:
        return self.segments[bisect.bisect_right(self._starts, offset) - 1]

    def physical(self, offset: int) -> int | None:
        if not 0 <= offset < self.size:
            return None
        seg = self._segment(offset)
        return seg.physical + offset - seg.offset

    def window(self, offset: int, length: int) -> AbstractContextManager[memoryview]:
        seg = self._segment(offset)
        if offset + length <= seg.offset + seg.size:
            return self.source.window(seg.physical + offset - seg.offset, length)
        return self._gathered(offset, length)

    @contextmanager
    def _gathered(self, offset: int, length: int) -> Iterator[memoryview]:
        """The window's pages copied into one buffer: by the source in one native call where it
        can (RAM files, raw dumps), else one source window per physically contiguous segment."""
        out = bytearray(length)
        if self.source.gather(*self._runs(offset, length), out):
            yield memoryview(out)
            return
        out = bytearray()
        while len(out) < length:
            pos = offset + len(out)
            seg = self._segment(pos)
            n = min(length - len(out), seg.offset + seg.size - pos)
            with self.source.window(seg.physical + pos - seg.offset, n) as view:
                out += view
        yield memoryview(out)

    def _runs(self, offset: int, length: int) -> tuple[bytes, bytes]:
        """(physicals, lengths) of the segments covering the window, clipped to it (array slices:
        no Python loop per page)."""
        i = bisect.bisect_right(self._starts, offset) - 1
        j = bisect.bisect_left(self._starts, offset + length)
        physicals, sizes = self._physicals[i:j], self._sizes[i:j]
        skip = offset - self._starts[i]
        physicals[0] += skip
        sizes[0] -= skip
        sizes[-1] -= self._starts[j - 1] + self._sizes[j - 1] - (offset + length)  # the last one's tail
        return physicals.tobytes(), sizes.tobytes()


class ProcessTarget(Target):
    """Guest memory scanned per process region when a Linux kernel is found, else physically."""

    kind = "processes"

    def __init__(self, source: MemorySource, kernel: Path | None = None, profile_cache: Path | None = None) -> None:
        self.source = source
        self._kernel_image, self._profile_cache = kernel, profile_cache
        self._details: dict[str, str] = {}
        self._owned: set[int] = set()  # physical page numbers offered by process units
        self._counts: dict[str, int] = {}  # processes.listed / walked / failed, once planned

    @functools.cached_property
    def detection(self) -> Detection:
        """The guest's Linux kernel, found when the scan plans (not when a request is checked)."""
        return open_linux(self.source, self._kernel_image, self._profile_cache)

    def identity(self) -> bytes | None:
        kernel = self._kernel_image
        return memory_identity(type(self).__name__, self.source, *([str(kernel)] if kernel else []))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ProcessTarget:
        """Params: ``path`` (memory image), ``format`` (default auto), ``kernel`` (bzImage), ``profile_cache`` (dir)."""
        path = params.get("path")
        if not isinstance(path, str) or not path:
            raise InvalidArgument("target.processes.path", "a memory image path is required")
        fmt = str(params.get("format") or "auto")
        kernel = str(params.get("kernel") or "")
        cache = str(params.get("profile_cache") or "")
        return cls(open_memory(path, fmt), Path(kernel) if kernel else None, Path(cache) if cache else None)

    def plan(self) -> Iterator[Unit | Skipped]:
        kernel = self.detection.kernel
        if kernel is None:
            yield from MemoryTarget(self.source).plan()
            return
        listing = kernel.processes()
        for problem in listing.problems:
            yield Skipped(f"os:{problem.what}", 0, GapKind.FAILED, problem.reason)
        self._details["os.processes"] = str(len(listing.processes))
        unreadable = sum(1 for p in listing.problems if p.what.startswith("task 0x"))  # on the list, unread
        counts = {"processes.listed": len(listing.processes) + unreadable, "processes.walked": 0}
        counts["processes.failed"] = unreadable
        for proc in listing.processes:
            failed: list[bool] = []
            yield from self._process_units(kernel, proc, failed)
            counts["processes.failed" if failed else "processes.walked"] += 1
        self._counts = counts
        loaded, problems = modules(kernel)
        self._details["os.modules"] = ",".join(m.name for m in loaded) or "none"
        for problem in problems:
            yield Skipped(f"os:{problem.what}", 0, GapKind.FAILED, problem.reason)
        yield from self._kernel_units(kernel, kernel_regions(kernel, loaded))

    def _process_units(self, kernel: LinuxKernel, proc: Process, failed: list[bool]) -> Iterator[Unit | Skipped]:
        """Units of ``proc``'s regions; appends to ``failed`` when part of it could not be walked."""
        vmas, problems = kernel.vmas(proc)
        for problem in problems:  # named "pid <pid> (<name>) ..."
            yield Skipped(f"os:{problem.what}", 0, GapKind.FAILED, problem.reason)
        if problems:
            failed.append(True)
        if proc.kernel_thread:
            return
        try:
            tables = kernel.user_tables(proc)
        except WalkError as e:  # a bad pgd pointer is a gap for this process
            failed.append(True)
            yield Skipped(
                f"pid {proc.pid} {proc.name}",
                sum(v.end - v.start for v in vmas),
                GapKind.UNREADABLE,
                f"page-table root unreadable: {e}",
            )
            return
        for vma in vmas:
            context = {"pid": str(proc.pid), "process": proc.name, "region": vma.describe()}
            name = f"pid {proc.pid} {proc.name} {vma.describe()}"
            for item in _region_units(self.source, tables, vma.start, vma.end, "process-memory", name, context, vma):
                if isinstance(item, VirtualRunUnit):
                    for seg in item.segments:
                        self._owned.update(range(seg.physical >> 12, (seg.physical + seg.size) >> 12))
                yield item

    def _kernel_units(self, kernel: LinuxKernel, regions: KernelRegions) -> Iterator[Unit | Skipped]:
        tables = kernel.kmem.tables
        for start, end, label in (
            (KERNEL_MAP, KERNEL_MAP_END, "kernel image"),
            (KERNEL_MAP_END, MODULES_END, "kernel modules area"),
        ):
            context = {"pid": "", "process": "kernel", "region": f"{label} {start:#x}-{end:#x}"}
            for item in _region_units(
                self.source, tables, start, end, "kernel-memory", f"kernel {label}", context, None, self._owned
            ):
                if isinstance(item, VirtualRunUnit):
                    item.namer = regions.name
                yield item

    def accounting(self) -> Mapping[str, int]:
        """``processes.listed`` (task-list entries, unreadable ones included) = ``processes.walked``
        (every region and the page tables read) + ``processes.failed`` (anything less: each is a gap)."""
        return dict(self._counts)

    def details(self) -> Mapping[str, str]:
        d = self.detection
        if d.kernel is None:
            return {"memory.format": self.source.format, "os": d.reason or "no Linux kernel found", "mode": "physical"}
        a = d.kernel.anchor
        return {
            "memory.format": self.source.format,
            "mode": "processes",
            "os": "linux",
            "os.banner": d.banner,
            "os.profile": d.profile.origin if d.profile else "",
            "os.kaslr_shift": f"{a.virtual_shift:#x}",
            "os.kernel_base": f"{a.text:#x}",
            "os.physical_base": f"{a.text_phys:#x}",
            "os.paging_levels": str(a.levels),
            **self._details,
        }

    def close(self) -> None:
        self.source.close()


def _region_units(
    source: MemorySource,
    tables: PageTables,
    start: int,
    end: int,
    kind: str,
    name: str,
    context: Mapping[str, str],
    vma: Vma | None,
    exclude: set[int] | None = None,
) -> Iterator[Unit | Skipped]:
    """Units for the present runs of ``[start, end)``; skipped records for the rest.

    Physical pages in ``exclude`` (page numbers) are left out (a hole in the run, no record).
    """
    run_start = -1
    segments: list[Segment] = []

    def flush() -> Iterator[Unit]:
        if segments:
            yield VirtualRunUnit(source, kind, f"{name} @{run_start:#x}", run_start, list(segments), context)
            segments.clear()

    pieces = runs(tables.walk(start, end))
    if exclude:
        pieces = _excluding(pieces, exclude)
    for piece in pieces:
        if isinstance(piece, PageMapping):
            if not segments:
                run_start = piece.virtual
            segments.append(Segment(piece.virtual - run_start, piece.physical, piece.size))
            continue
        yield from flush()
        where = f"{name} @{piece.virtual:#x}"
        if isinstance(piece, BadEntry) and piece.size == 0:
            continue
        if isinstance(piece, BadEntry):
            yield Skipped(where, piece.size, GapKind.UNREADABLE, piece.reason)
        elif isinstance(piece, NotPresent) and piece.entry:
            reason = f"page not present (entry {piece.entry:#x}: swapped out or in transition)"
            yield Skipped(where, piece.size, GapKind.UNREADABLE, reason)
        elif vma is not None:
            yield Skipped(where, piece.size, GapKind.SKIPPED_POLICY, "never populated (no page in memory)", gap=False)
    yield from flush()


def _excluding(pieces: Iterator[Piece], exclude: set[int]) -> Iterator[Piece]:
    """Mappings with the pages in ``exclude`` cut out; a cut becomes a zero-size break."""
    for piece in pieces:
        if not isinstance(piece, PageMapping):
            yield piece
            continue
        first, count = piece.physical >> 12, piece.size >> 12
        if not any(first + i in exclude for i in range(count)):
            yield piece
            continue
        i = 0
        while i < count:
            if first + i in exclude:
                j = i
                while j < count and first + j in exclude:
                    j += 1
                yield BadEntry(piece.virtual + i * PAGE, 0, "owned by a process")
                i = j
                continue
            j = i
            while j < count and first + j not in exclude:
                j += 1
            yield PageMapping(piece.virtual + i * PAGE, piece.physical + i * PAGE, (j - i) * PAGE)
            i = j


def process_target(source: MemorySource, kernel: Path | None = None, profile_cache: Path | None = None) -> Target:
    """The process-aware target over ``source`` (falls back to a physical scan, saying why)."""
    return ProcessTarget(source, kernel, profile_cache)
