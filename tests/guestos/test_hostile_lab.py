"""Hostile guests: a real lab dump corrupted on purpose. The scan ends quickly, INCOMPLETE, with the reason.

Corruptions are written into a copy of the dump at physical addresses found through our own
kernel view: a task list that loops back on itself, a VMA with an absurd range, and a process
page table pointing outside guest RAM. A ruleset that matches nothing is used, so the verdict
shows coverage alone (CLEAN for the intact dump, INCOMPLETE for each corrupted one).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from scanner.acquisition.memory.raw import RawMemory
from scanner.engine import Engine, EngineSettings
from scanner.guestos.linux.detect import open_linux
from scanner.guestos.linux.kernel import LinuxKernel
from scanner.guestos.linux.paging import PRESENT, WRITABLE
from scanner.guestos.linux.vmas import vma_pointers
from scanner.guestos.problems import Limits
from scanner.rulesets import LoadedRuleset, compile_path
from scanner.targets.processes import process_target
from scanner.verdicts import Verdict, VerdictKind

from .conftest import Dumped

pytestmark = pytest.mark.lab
QUICK = 30.0  # seconds: a corrupted guest must not make the scan crawl


@pytest.fixture(scope="module")
def nothing(tmp_path_factory: pytest.TempPathFactory) -> LoadedRuleset:
    d = tmp_path_factory.mktemp("rules")
    (d / "none.yar").write_text('rule NeverMatches { strings: $a = "avscan-never-present-3f1c9a" condition: $a }\n')
    return compile_path(d)


def scan(path: Path, rules: LoadedRuleset) -> tuple[Verdict, float]:
    began = time.monotonic()
    engine = Engine(EngineSettings(threads=2))
    try:
        verdict = engine.scan(rules, process_target(RawMemory(str(path))))
    finally:
        engine.close()
    return verdict, time.monotonic() - began


def corrupted(dumped: Dumped, tmp_path: Path, edit: Callable[[LinuxKernel, bytearray], None]) -> Path:
    data = bytearray(dumped.raw.read_bytes())
    view = open_linux(RawMemory(str(dumped.raw))).kernel
    assert view is not None
    edit(view, data)
    out = tmp_path / "corrupt.raw"
    out.write_bytes(data)
    return out


def poke(view: LinuxKernel, data: bytearray, virtual: int, value: int) -> None:
    struct.pack_into("<Q", data, view.kmem.physical(virtual), value)


def marker(view: LinuxKernel, dumped: Dumped) -> tuple[int, int]:
    proc = next(p for p in view.processes().processes if p.pid == dumped.guest.marker_pids[0])
    return proc.task, proc.mm


def reasons(verdict: Verdict) -> str:
    return " | ".join(f"{g.unit}: {g.detail}" for g in verdict.coverage.gaps)


def test_intact_dump_is_clean(dumped: Dumped, nothing: LoadedRuleset) -> None:
    verdict, _ = scan(dumped.raw, nothing)
    assert verdict.kind is VerdictKind.CLEAN, reasons(verdict)


def test_task_list_looping_back_on_itself(dumped: Dumped, nothing: LoadedRuleset, tmp_path: Path) -> None:
    def edit(view: LinuxKernel, data: bytearray) -> None:
        tasks = [p.task for p in view.processes().processes]
        off = view.layout["task.tasks"]
        a, b = tasks[2] + off, tasks[8] + off
        poke(view, data, b, a)  # task 8 -> task 2: a loop that never comes back to init_task

    verdict, seconds = scan(corrupted(dumped, tmp_path, edit), nothing)
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert "os:task list: tasks.next->prev does not point back" in reasons(verdict)
    assert seconds < QUICK


def test_vma_with_an_absurd_range(dumped: Dumped, nothing: LoadedRuleset, tmp_path: Path) -> None:
    def edit(view: LinuxKernel, data: bytearray) -> None:
        _, mm = marker(view, dumped)
        first_vma = vma_pointers(view.kmem, view.layout, mm, Limits())[0]
        poke(view, data, first_vma + view.layout["vma.vm_end"], 0xFFFF_FFFF_FFFF_F000)

    verdict, seconds = scan(corrupted(dumped, tmp_path, edit), nothing)
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert "absurd VMA range" in reasons(verdict)
    assert seconds < QUICK


def test_maple_tree_pointing_at_itself(dumped: Dumped, nothing: LoadedRuleset, tmp_path: Path) -> None:
    def edit(view: LinuxKernel, data: bytearray) -> None:
        _, mm = marker(view, dumped)
        root_at = mm + view.layout["mm.mm_mt"] + view.layout["mt.ma_root"]
        root = view.kmem.u64(root_at)
        # make the root an inner node (maple_range_64) whose first slot is the root itself
        inner = (root & ~0xFF) | (2 << 3) | 2
        poke(view, data, root_at, inner)
        poke(view, data, (root & ~0xFF) + view.layout["mr64.slot"], inner)

    verdict, seconds = scan(corrupted(dumped, tmp_path, edit), nothing)
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert "memory map" in reasons(verdict)
    assert seconds < QUICK


def test_page_tables_pointing_outside_ram(dumped: Dumped, nothing: LoadedRuleset, tmp_path: Path) -> None:
    def edit(view: LinuxKernel, data: bytearray) -> None:
        proc = next(p for p in view.processes().processes if p.pid == dumped.guest.marker_pids[0])
        pgd = view.kmem.physical(proc.pgd)
        for index in range(256):  # every user-half entry that is present
            (entry,) = struct.unpack_from("<Q", data, pgd + 8 * index)
            if entry & PRESENT:
                struct.pack_into("<Q", data, pgd + 8 * index, 0x7F_0000_0000 | PRESENT | WRITABLE)

    verdict, seconds = scan(corrupted(dumped, tmp_path, edit), nothing)
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert f"pid {dumped.guest.marker_pids[0]}" in reasons(verdict)
    assert "outside guest memory" in reasons(verdict)
    assert seconds < QUICK
