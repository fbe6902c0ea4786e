"""Reverse map: which processes map a guest physical address (for hits of a physical scan).

Walks every process's regions through its page tables (bounded by the kernel view's limits) and
returns each mapping of the physical page, with the virtual address and region. Shared pages
(libraries, the page cache) give several owners; an address no process maps gives none.

A process whose memory map or page tables cannot be walked is never dropped silently: it is a
:class:`~scanner.guestos.problems.Problem` of the :class:`ReverseMap` (pid, name, reason) and
counted in ``failed``, so a caller can say that an address without owner may belong to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from scanner.guestos.linux.kernel import LinuxKernel
from scanner.guestos.linux.paging import Mapping
from scanner.guestos.linux.tasks import Process
from scanner.guestos.problems import Problem, WalkError


@dataclass(frozen=True)
class Owner:
    pid: int
    process: str
    virtual: int
    region: str


@dataclass(frozen=True)
class ReverseMap:
    """Owners per physical address, and how the walk of the processes went.

    ``listed`` counts the task list (unreadable entries included); ``walked + failed == listed``.
    """

    owners: dict[int, list[Owner]] = field(default_factory=dict)
    listed: int = 0
    walked: int = 0
    failed: tuple[Problem, ...] = ()

    def accounting(self) -> dict[str, int]:
        return {"processes.listed": self.listed, "processes.walked": self.walked, "processes.failed": len(self.failed)}


def owners(kernel: LinuxKernel, physical: int) -> list[Owner]:
    """Every (process, virtual address) that maps physical address ``physical``."""
    return owners_of(kernel, [physical]).get(physical, [])


def owners_of(kernel: LinuxKernel, addresses: Iterable[int]) -> dict[int, list[Owner]]:
    """:func:`owners` for many addresses in one walk of every process's memory."""
    return reverse_map(kernel, addresses).owners


def reverse_map(kernel: LinuxKernel, addresses: Iterable[int]) -> ReverseMap:
    """The owners of ``addresses``, with the processes that could not be walked."""
    wanted = set(addresses)
    out: dict[int, list[Owner]] = {}
    listing = kernel.processes()
    failed = [p for p in listing.problems if p.what.startswith("task 0x")]  # on the list, unreadable
    walked = 0
    for proc in listing.processes:
        problems = _map_one(kernel, proc, wanted, out)
        if problems:
            failed.append(Problem(f"pid {proc.pid} ({proc.name})", "; ".join(p.reason for p in problems)))
        else:
            walked += 1
    return ReverseMap(out, walked + len(failed), walked, tuple(failed))


def _map_one(kernel: LinuxKernel, proc: Process, wanted: set[int], out: dict[int, list[Owner]]) -> list[Problem]:
    """Add ``proc``'s mappings of ``wanted`` to ``out``; the problems that kept part of it unseen."""
    vmas, problems = kernel.vmas(proc)
    if proc.kernel_thread:
        return problems
    try:
        tables = kernel.user_tables(proc)
    except WalkError as e:
        return [*problems, Problem(f"pid {proc.pid} ({proc.name}) page tables", e.message)]
    for vma in vmas:
        for piece in tables.walk(vma.start, vma.end):
            if not isinstance(piece, Mapping):
                continue
            for address in wanted:
                if piece.physical <= address < piece.physical + piece.size:
                    virtual = piece.virtual + address - piece.physical
                    out.setdefault(address, []).append(Owner(proc.pid, proc.name, virtual, vma.describe()))
    return problems
