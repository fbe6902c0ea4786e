"""Reverse map: which processes map a guest physical address (for hits of a physical scan).

Walks every process's regions through its page tables (bounded by the kernel view's limits) and
returns each mapping of the physical page, with the virtual address and region. Shared pages
(libraries, the page cache) give several owners; an address no process maps gives none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scanner.guestos.linux.kernel import LinuxKernel
from scanner.guestos.linux.paging import Mapping
from scanner.guestos.problems import WalkError


@dataclass(frozen=True)
class Owner:
    pid: int
    process: str
    virtual: int
    region: str


def owners(kernel: LinuxKernel, physical: int) -> list[Owner]:
    """Every (process, virtual address) that maps physical address ``physical``."""
    return owners_of(kernel, [physical]).get(physical, [])


def owners_of(kernel: LinuxKernel, addresses: Iterable[int]) -> dict[int, list[Owner]]:
    """:func:`owners` for many addresses in one walk of every process's memory."""
    wanted = set(addresses)
    out: dict[int, list[Owner]] = {}
    for proc in kernel.processes().processes:
        if proc.kernel_thread:
            continue
        vmas, _ = kernel.vmas(proc)
        try:
            tables = kernel.user_tables(proc)
        except WalkError:  # an unreadable root: this process maps nothing we can see
            continue
        for vma in vmas:
            for piece in tables.walk(vma.start, vma.end):
                if not isinstance(piece, Mapping):
                    continue
                for address in wanted:
                    if piece.physical <= address < piece.physical + piece.size:
                        virtual = piece.virtual + address - piece.physical
                        out.setdefault(address, []).append(Owner(proc.pid, proc.name, virtual, vma.describe()))
    return out
