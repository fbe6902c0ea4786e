"""The task-list walker on a synthetic kernel: a list that loops without closing is a problem, not a hang."""

from __future__ import annotations

import struct

from scanner.guestos.linux.layout import Layout
from scanner.guestos.linux.memory import VirtualMemory
from scanner.guestos.linux.paging import PRESENT, WRITABLE, PageTables
from scanner.guestos.linux.tasks import walk_tasks
from scanner.guestos.problems import Limits

from .test_paging import BytesMemory, idx, put

BASE = 0xFFFF_8880_0000_0000  # a direct-map-like kernel address, mapped 1:1 onto 1 MiB


def kernel(mem: bytearray) -> VirtualMemory:
    flags = PRESENT | WRITABLE
    put(mem, 0x1000, idx(BASE, 39), 0x2000 | flags)
    put(mem, 0x2000, idx(BASE, 30), 0x3000 | flags)
    put(mem, 0x3000, idx(BASE, 21), 0x4000 | flags)
    for i in range(256):
        put(mem, 0x4000, i, (i * 4096) | flags)
    return VirtualMemory(PageTables(BytesMemory(mem), 0x1000))


LAYOUT = Layout({"task.tasks": 0x10})


def link(mem: bytearray, tasks: list[int], order: list[int]) -> None:
    for a, b in zip(order, order[1:] + order[:1], strict=True):
        struct.pack_into("<Q", mem, tasks[a] + 0x10, BASE + tasks[b] + 0x10)
        struct.pack_into("<Q", mem, tasks[b] + 0x18, BASE + tasks[a] + 0x10)


def test_a_closed_list_is_walked_whole() -> None:
    mem = bytearray(1 << 20)
    kmem = kernel(mem)
    tasks = [0x10000 + 0x1000 * i for i in range(5)]
    link(mem, tasks, [0, 1, 2, 3, 4])
    found, problems = walk_tasks(kmem, LAYOUT, BASE + tasks[0], Limits())
    assert found == [BASE + t for t in tasks] and problems == []


def test_a_loop_that_misses_the_head_is_a_problem() -> None:
    mem = bytearray(1 << 20)
    kmem = kernel(mem)
    tasks = [0x10000 + 0x1000 * i for i in range(5)]
    link(mem, tasks, [1, 2, 3, 4])  # 1..4 form a ring; the head points into it
    struct.pack_into("<Q", mem, tasks[0] + 0x10, BASE + tasks[1] + 0x10)
    struct.pack_into("<Q", mem, tasks[1] + 0x18, BASE + tasks[0] + 0x10)
    found, problems = walk_tasks(kmem, LAYOUT, BASE + tasks[0], Limits())
    assert len(found) <= 5
    assert problems and problems[0].what == "task list"


def test_the_task_limit_is_enforced() -> None:
    mem = bytearray(1 << 20)
    kmem = kernel(mem)
    tasks = [0x10000 + 0x1000 * i for i in range(20)]
    link(mem, tasks, list(range(20)))
    found, problems = walk_tasks(kmem, LAYOUT, BASE + tasks[0], Limits(max_tasks=5))
    assert len(found) == 6 and "more than 5 tasks" in problems[0].reason
