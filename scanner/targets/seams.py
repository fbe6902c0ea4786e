"""Page seams as scan units: matches that straddle two virtual pages held far apart in RAM.

The default memory scan (``os=auto``) reads guest RAM physically, so a string that runs across a
virtual page boundary whose two pages are not physically adjacent is never whole in what it
reads. After the physical units, :func:`seam_units` offers every seam of every process
(:mod:`scanner.guestos.linux.seams`: listed once per pair of physical pages, however many
processes map it) as a member of a :class:`SeamBatch`: the last ``context`` bytes of the first
page followed by the first ``context`` bytes of the second. A match is reported only when it
crosses the boundary (anything inside one page was the physical scan's), named by every process
that maps the seam with its own virtual address (:mod:`scanner.targets.batch`).

Bounds (documented, each one a gap when hit, never a silent CLEAN):
- ``context`` (default :data:`SEAM_CONTEXT`, at most a page) bytes on each side: every match up
  to ``context + 1`` bytes long that crosses a seam is seen whole; a longer one is only if it has
  at most ``context`` bytes on each side.
- at most ``max_seams`` distinct seams (default: one per page of guest RAM, at least
  :data:`MIN_MAX_SEAMS`): hostile page tables cannot make the scan unbounded; past the cap the
  rest is one gap with the count.
- a process whose memory could not be walked is one gap naming it (its seams are unknown).
"""

from __future__ import annotations

import array
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager

from scanner.acquisition.memory import MemorySource
from scanner.guestos.linux.paging import PAGE
from scanner.guestos.linux.seams import Seam, SeamMap
from scanner.targets.base import Skipped
from scanner.targets.batch import BatchUnit, Member
from scanner.verdicts import GapKind

SEAM_CONTEXT = 1024  # bytes each side of a seam (see the bounds in the module docstring)
BATCH_SEAMS = 4096  # seams per batch: one gather and one YARA call for 8 MiB at the default context
MIN_MAX_SEAMS = 65536
MAX_SHOWN = 16  # owners named per finding (a shared seam can be mapped by every process)


def max_seams_for(source: MemorySource) -> int:
    """The default cap on distinct seams: one per page of guest RAM (at least MIN_MAX_SEAMS)."""
    return max(MIN_MAX_SEAMS, source.size // PAGE)


class SeamBatch(BatchUnit):
    """Up to :data:`BATCH_SEAMS` seams, each read as ``context`` + ``context`` bytes (two runs)."""

    kind = "process-seam"

    def __init__(self, source: MemorySource, index: int, seams: Sequence[Seam], context: int) -> None:
        self.source, self.seams, self.context_bytes = source, list(seams), context
        self.name = f"{source.name} page seams #{index}"
        self.size = 2 * context * len(self.seams)
        self.members = [_member(s, i * 2 * context, context) for i, s in enumerate(self.seams)]
        runs: list[int] = []
        for s in self.seams:
            runs += [s.before - context, s.after]
        self._physicals = array.array("Q", runs)
        self._lengths = array.array("Q", [context] * len(runs))

    def window(self, offset: int, length: int) -> AbstractContextManager[memoryview]:
        return self._read(offset, length)

    @contextmanager
    def _read(self, offset: int, length: int) -> Iterator[memoryview]:
        """The whole batch in one native gather where the source can, else one window per side."""
        out = bytearray(self.size)
        if not self.source.gather(self._physicals.tobytes(), self._lengths.tobytes(), out):
            at = 0
            for physical in self._physicals:
                with self.source.window(physical, self.context_bytes) as view:
                    out[at : at + self.context_bytes] = view
                at += self.context_bytes
        yield memoryview(out)[offset : offset + length]

    def physical(self, offset: int) -> int | None:
        if not 0 <= offset < self.size:
            return None
        run, within = divmod(offset, self.context_bytes)
        return int(self._physicals[run]) + within

    def member_attribute(self, member: Member, offsets: Sequence[int]) -> Mapping[str, str]:
        """Every process that maps the seam (up to MAX_SHOWN), with its virtual address of ``offsets[0]``."""
        seam = self.seams[member.offset // (2 * self.context_bytes)]
        owners = seam.owners[:MAX_SHOWN]
        at = offsets[0] - member.boundary  # relative to the boundary, the same in every process
        context = {
            "pid": ",".join(str(o.pid) for o in owners),
            "process": ",".join(o.process for o in owners),
            "virtual_address": ",".join(f"{o.virtual + at:#x}" for o in owners),
            "region": " | ".join(o.region for o in owners),
            "seam": f"physical {seam.before - PAGE:#x}+{PAGE:#x} then {seam.after:#x}",
        }
        if seam.mapped > len(owners):
            context["seam.mapped"] = f"{seam.mapped} mappings, first {len(owners)} named"
        return context


def _member(seam: Seam, offset: int, context: int) -> Member:
    first = seam.owners[0]
    name = f"pid {first.pid} {first.process} seam @{first.virtual:#x}"
    return Member(name, offset, 2 * context, context, first.virtual - context)


def seam_units(source: MemorySource, found: SeamMap, context: int = SEAM_CONTEXT) -> Iterator[SeamBatch | Skipped]:
    """Batches of every seam in ``found``, then a gap per process that could not be walked and one
    for seams past the cap. Seams are ordered by physical address (reads in file order)."""
    if not 0 < context <= PAGE:
        raise ValueError(f"seam context must be 1..{PAGE} bytes, not {context}")
    ordered = sorted(found.seams.values(), key=lambda s: (s.before, s.after))
    for i in range(0, len(ordered), BATCH_SEAMS):
        yield SeamBatch(source, i // BATCH_SEAMS, ordered[i : i + BATCH_SEAMS], context)
    for problem in found.failed:
        yield Skipped(f"seams:{problem.what}", 0, GapKind.FAILED, f"page seams not scanned: {problem.reason}")
    if found.over_cap:
        detail = f"{found.over_cap} page seam mapping(s) past the cap of {len(found.seams)} distinct seams not scanned"
        yield Skipped("seams:cap", 0, GapKind.SKIPPED_LIMIT, detail)
