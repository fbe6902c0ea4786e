"""A running Linux kernel seen from outside: profile + anchor + memory, and the walks over it.

:class:`LinuxKernel` is what the process target and the reverse map use. It never raises for
hostile guest data once built: each walk returns its results and the problems it met.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from scanner.acquisition.memory import MemorySource
from scanner.guestos.linux.kaslr import KernelAnchor
from scanner.guestos.linux.layout import Layout
from scanner.guestos.linux.memory import VirtualMemory
from scanner.guestos.linux.paging import PageTables
from scanner.guestos.linux.tasks import Process, read_process, walk_tasks
from scanner.guestos.linux.vmas import Vma, read_vmas
from scanner.guestos.problems import Limits, Problem, WalkError


@dataclass(frozen=True)
class ProcessList:
    processes: tuple[Process, ...]
    problems: tuple[Problem, ...] = ()


@dataclass
class LinuxKernel:
    source: MemorySource
    banner: str
    layout: Layout
    anchor: KernelAnchor
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        self.kmem = VirtualMemory(PageTables(self.source, self.anchor.dtb, self.anchor.levels))

    def processes(self) -> ProcessList:
        """Every process on the task list (kernel threads included), with their problems."""
        tasks, problems = walk_tasks(self.kmem, self.layout, self.anchor.init_task, self.limits)
        out: list[Process] = []
        for task in tasks:
            try:
                proc, more = read_process(self.kmem, self.layout, task, self.limits)
            except WalkError as e:
                problems.append(Problem(f"task {task:#x}", e.message))
                continue
            problems.extend(more)
            if proc.mm:
                try:
                    proc = _with_cmdline(proc, self.kmem, self.user_memory(proc), self.layout, self.limits)
                except WalkError as e:
                    problems.append(Problem(f"pid {proc.pid} cmdline", e.message))
            out.append(proc)
        return ProcessList(tuple(out), tuple(problems))

    def user_tables(self, proc: Process) -> PageTables:
        """The page tables of ``proc`` (its ``mm->pgd``, translated through the kernel's tables)."""
        return PageTables(self.source, self.kmem.physical(proc.pgd), self.anchor.levels, self.limits.max_pages)

    def user_memory(self, proc: Process) -> VirtualMemory:
        return VirtualMemory(self.user_tables(proc))

    def vmas(self, proc: Process) -> tuple[list[Vma], list[Problem]]:
        """``proc``'s regions; a tree that cannot be walked is one problem and no regions. Every
        problem's ``what`` starts with ``pid <pid> (<name>)``."""
        if not proc.mm:
            return [], []
        who = f"pid {proc.pid} ({proc.name})"
        try:
            vmas, problems = read_vmas(self.kmem, self.layout, proc.mm, self.limits, self.anchor.levels)
        except WalkError as e:
            return [], [Problem(f"{who} memory map", e.message)]
        return vmas, [Problem(f"{who} {p.what}", p.reason) for p in problems]


def _with_cmdline(proc: Process, kmem: VirtualMemory, umem: VirtualMemory, layout: Layout, limits: Limits) -> Process:
    """``proc`` with its command line (``arg_start..arg_end`` of its memory, NULs as spaces, bounded)."""
    start, end = kmem.u64(proc.mm + layout["mm.arg_start"]), kmem.u64(proc.mm + layout["mm.arg_end"])
    if end < start:
        raise WalkError(f"arg_end {end:#x} below arg_start {start:#x}", proc.mm)
    raw = umem.read(start, min(end - start, limits.max_cmdline))
    return replace(proc, cmdline=raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace"))
