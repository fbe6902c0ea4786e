"""The process list: ``init_task.tasks`` walked in the kernel's address space, bounded and checked.

Each entry of the circular ``tasks`` list is a thread-group leader. The walk stops when it comes
back to ``init_task``; a node seen twice (a loop that does not close at the head), a ``prev``
that does not point back, more than ``max_tasks`` entries or an unreadable pointer end it with a
:class:`~scanner.guestos.problems.Problem` (the processes read so far are kept). Fields that
cannot be read for one task (its command line, its executable) are problems of that task only.
"""

from __future__ import annotations

from dataclasses import dataclass

from scanner.guestos.linux.layout import Layout
from scanner.guestos.linux.memory import VirtualMemory
from scanner.guestos.linux.paths import file_path
from scanner.guestos.problems import Limits, Problem, WalkError

MAX_PID = 1 << 22


@dataclass(frozen=True)
class Process:
    """One process (thread-group leader). ``mm`` is 0 for kernel threads."""

    task: int  # virtual address of its task_struct
    pid: int
    ppid: int
    uid: int
    name: str
    mm: int
    pgd: int  # virtual address of its page-table root (0 for kernel threads)
    cmdline: str = ""
    exe: str = ""
    exiting: bool = False  # past exit_task_namespaces (no nsproxy) or a zombie: ps shows <defunct>

    @property
    def kernel_thread(self) -> bool:
        return self.mm == 0


def comm(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def walk_tasks(kmem: VirtualMemory, layout: Layout, init_task: int, limits: Limits) -> tuple[list[int], list[Problem]]:
    """Task addresses from ``init_task`` (included) around the list, and the problems met."""
    off = layout["task.tasks"]
    head = init_task + off
    out: list[int] = [init_task]
    problems: list[Problem] = []
    seen = {head}
    node = head
    for _ in range(limits.max_tasks):
        try:
            nxt = kmem.pointer(node, "tasks.next")
            if kmem.pointer(nxt + 8, "tasks.prev") != node:
                raise WalkError("tasks.next->prev does not point back", nxt)
        except WalkError as e:
            problems.append(Problem("task list", e.message))
            return out, problems
        if nxt == head:
            return out, problems
        if nxt in seen:
            problems.append(Problem("task list", f"loops back to {nxt - off:#x} without closing at init_task"))
            return out, problems
        seen.add(nxt)
        out.append(nxt - off)
        node = nxt
    problems.append(Problem("task list", f"more than {limits.max_tasks} tasks"))
    return out, problems


def read_process(kmem: VirtualMemory, layout: Layout, task: int, limits: Limits) -> tuple[Process, list[Problem]]:
    """The process at ``task``; raises WalkError if its identity cannot be read."""
    raw = kmem.read(task, layout.sizes["task"])

    def word(name: str) -> int:
        return int.from_bytes(raw[layout[name] : layout[name] + 8], "little")

    def i32(name: str) -> int:
        return int.from_bytes(raw[layout[name] : layout[name] + 4], "little", signed=True)

    pid = i32("task.tgid")
    if not 0 <= pid < MAX_PID:
        raise WalkError(f"task pid {pid} out of range", task)
    name = comm(raw[layout["task.comm"] : layout["task.comm"] + layout.counts["task.comm"]])
    if not name.isprintable():
        raise WalkError(f"task comm {name!r} is not printable", task)
    parent = word("task.real_parent")
    ppid = kmem.i32(parent + layout["task.tgid"]) if parent and parent != task else 0
    cred = word("task.cred")
    uid = kmem.u32(cred + layout["cred.uid"]) if cred else -1
    mm = word("task.mm")
    problems: list[Problem] = []
    exe = ""
    pgd_addr = 0
    if mm:
        pgd_addr = kmem.pointer(mm + layout["mm.pgd"], "mm.pgd")
        try:
            exe_file = kmem.pointer(mm + layout["mm.exe_file"], "exe_file", nullable=True)
            exe = file_path(kmem, layout, exe_file, limits.max_path_depth)
        except WalkError as e:
            problems.append(Problem(f"pid {pid} exe", e.message))
    exiting = (layout.has("task.nsproxy") and word("task.nsproxy") == 0) or (
        layout.has("task.exit_state") and i32("task.exit_state") != 0
    )
    return Process(task, pid, ppid if pid else 0, uid, name, mm, pgd_addr, "", exe, exiting), problems
