"""Page seams: where a process's virtual memory continues on a physical page that is not the next one.

A physical scan of guest RAM sees every page, but a string that runs from the end of one virtual
page into the next is split in two wherever the process's page tables put those pages apart in
physical memory (anonymous memory almost always). A *seam* is such a place: two virtually
consecutive present pages (or larger pages) of one region whose physical addresses are not
contiguous. It is keyed by the pair (physical end of the first page, physical start of the
second), so a seam that many processes map (a shared library's page-cache pages, memory shared
after ``fork``) is listed once, with every (process, virtual address) that maps it.

Contract: the walk is bounded. At most ``max_seams`` distinct seams are kept; past that the
rest is counted in ``over_cap`` (the caller turns it into a gap). A process whose memory map or
page tables cannot be walked is a :class:`~scanner.guestos.problems.Problem` of the result, and so
is a region part of whose page tables could not be read (a walk limit, a table outside memory):
seams there are unknown, never silently absent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from scanner.guestos.linux.kernel import LinuxKernel
from scanner.guestos.linux.paging import BadEntry, Mapping, PageTables, runs
from scanner.guestos.linux.reverse import Owner, ReverseMap
from scanner.guestos.linux.tasks import Process
from scanner.guestos.linux.vmas import Vma
from scanner.guestos.problems import Problem, WalkError

MAX_OWNERS = 16  # (process, address) pairs kept per seam; all are counted
MAX_MAPPINGS = 1 << 20  # mappings kept for the reverse map; past it, ``mappings`` is None


@dataclass(frozen=True)
class SeamOwner:
    """Process ``pid`` maps the seam with its boundary (first byte of the second page) at ``virtual``."""

    pid: int
    process: str
    virtual: int
    region: str


@dataclass
class Seam:
    """The first page ends at physical ``before``; the next virtual page starts at physical ``after``."""

    before: int
    after: int
    owners: list[SeamOwner] = field(default_factory=list)
    mapped: int = 0  # every (process, address) that maps it, including owners beyond MAX_OWNERS


@dataclass
class SeamMap:
    """The seams of every process, and how the walk went (``walked + failed == listed``)."""

    seams: dict[tuple[int, int], Seam] = field(default_factory=dict)
    listed: int = 0
    walked: int = 0
    failed: list[Problem] = field(default_factory=list)
    over_cap: int = 0  # seam occurrences not kept because ``max_seams`` distinct ones were
    # every present run walked: (physical, size, virtual, pid, process, region), in walk order, so
    # findings of the physical scan are attributed without walking again (None: too many to keep)
    mappings: list[tuple[int, int, int, int, str, str]] | None = field(default_factory=list)

    def accounting(self) -> dict[str, int]:
        return {"processes.listed": self.listed, "processes.walked": self.walked, "processes.failed": len(self.failed)}


def reverse_from(found: SeamMap, addresses: Iterable[int]) -> ReverseMap:
    """:func:`~scanner.guestos.linux.reverse.reverse_map` from the mappings the seam walk kept."""
    wanted = set(addresses)
    out: dict[int, list[Owner]] = {}
    for physical, size, virtual, pid, process, region in found.mappings or ():
        for address in wanted:
            if physical <= address < physical + size:
                out.setdefault(address, []).append(Owner(pid, process, virtual + address - physical, region))
    return ReverseMap(out, found.listed, found.walked, tuple(found.failed))


def find_seams(kernel: LinuxKernel, max_seams: int) -> SeamMap:
    """Every seam of every user process's regions (see the module contract)."""
    out = SeamMap()
    listing = kernel.processes()
    out.failed.extend(p for p in listing.problems if p.what.startswith("task 0x"))  # listed, unreadable
    for proc in listing.processes:
        problems = _process_seams(kernel, proc, out, max_seams)
        if problems:
            out.failed.append(Problem(f"pid {proc.pid} ({proc.name})", "; ".join(p.reason for p in problems)))
        else:
            out.walked += 1
    out.listed = out.walked + len(out.failed)
    return out


def _process_seams(kernel: LinuxKernel, proc: Process, out: SeamMap, max_seams: int) -> list[Problem]:
    """Add ``proc``'s seams to ``out``; the problems that kept part of its memory unseen."""
    vmas, problems = kernel.vmas(proc)
    if proc.kernel_thread:
        return problems
    try:
        tables = kernel.user_tables(proc)
    except WalkError as e:
        return [*problems, Problem(f"pid {proc.pid} ({proc.name}) page tables", e.message)]
    for vma in vmas:
        problems.extend(_region_seams(tables, proc, vma, out, max_seams))
    return problems


def _region_seams(tables: PageTables, proc: Process, vma: Vma, out: SeamMap, max_seams: int) -> list[Problem]:
    problems: list[Problem] = []
    held: Mapping | None = None
    for piece in runs(tables.walk(vma.start, vma.end)):
        if isinstance(piece, BadEntry) and "outside guest memory" not in piece.reason:
            # a walk limit or an unreadable table: what this part of the region maps is unknown
            where = f"pid {proc.pid} ({proc.name}) {piece.virtual:#x}"
            problems.append(Problem(where, f"page seams unknown: {piece.reason}"))
        if not isinstance(piece, Mapping):
            held = None
            continue
        _keep(out, piece, proc, vma)
        if held is not None and held.virtual + held.size == piece.virtual:
            _add(out, held.physical + held.size, piece.physical, proc, piece.virtual, vma, max_seams)
        held = piece
    return problems


def _keep(out: SeamMap, piece: Mapping, proc: Process, vma: Vma) -> None:
    if out.mappings is None:
        return
    if len(out.mappings) >= MAX_MAPPINGS:
        out.mappings = None  # the reverse map walks again instead
        return
    out.mappings.append((piece.physical, piece.size, piece.virtual, proc.pid, proc.name, vma.describe()))


def _add(out: SeamMap, before: int, after: int, proc: Process, virtual: int, vma: Vma, max_seams: int) -> None:
    key = (before, after)
    seam = out.seams.get(key)
    if seam is None:
        if len(out.seams) >= max_seams:
            out.over_cap += 1
            return
        seam = out.seams[key] = Seam(before, after)
    seam.mapped += 1
    if len(seam.owners) < MAX_OWNERS:
        seam.owners.append(SeamOwner(proc.pid, proc.name, virtual, vma.describe()))
