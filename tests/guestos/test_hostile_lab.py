"""Hostile guests: a real lab dump corrupted on purpose. The scan ends quickly, INCOMPLETE, with the reason.

Corruptions are written into a copy of the dump, each placed by someone other than the walker
under test: a task list that loops back on itself (where Volatility 3's pslist finds the tasks), a
VMA with an absurd range (found by the start and end the guest's own /proc/<pid>/maps printed), a
maple tree pointing at itself and a process page table pointing outside guest RAM (both at the
physical addresses Volatility 3 translates to, with its own task list, types and page tables:
``volatility_plugins/avscan_placement.py``).
"Quick" is counted in reads against the intact dump's scan, not in seconds.
A ruleset that matches nothing is used, so the verdict shows coverage alone (CLEAN for the
intact dump, INCOMPLETE for each corrupted one).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from scanner.acquisition.memory.raw import RawMemory
from scanner.engine import Engine, EngineSettings
from scanner.guestos.linux.detect import open_linux
from scanner.guestos.linux.isf import write_isf
from scanner.guestos.linux.kernel import LinuxKernel
from scanner.guestos.linux.paging import PRESENT, WRITABLE, canonical
from scanner.rulesets import LoadedRuleset, compile_path
from scanner.targets.processes import process_target
from scanner.verdicts import Verdict, VerdictKind

from .conftest import Dumped

pytestmark = pytest.mark.lab

PLUGINS = Path(__file__).parent / "volatility_plugins"
MAPLE_RANGE_64 = 2  # enum maple_type: an inner node with 64-bit pivots


@pytest.fixture(scope="module")
def nothing(tmp_path_factory: pytest.TempPathFactory) -> LoadedRuleset:
    d = tmp_path_factory.mktemp("rules")
    (d / "none.yar").write_text('rule NeverMatches { strings: $a = "avscan-never-present-3f1c9a" condition: $a }\n')
    return compile_path(d)


class CountedRaw(RawMemory):
    """A raw dump that counts the reads made of it (windows and gathered runs): the work a
    scan did, comparable between scans of the same dump, unlike its wall-clock time."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.reads = 0
        self._count = threading.Lock()

    def _window(self, address: int, length: int) -> AbstractContextManager[memoryview]:
        with self._count:
            self.reads += 1
        return super()._window(address, length)

    def gather(self, physicals: bytes, lengths: bytes, dst: bytearray) -> bool:
        with self._count:
            self.reads += len(lengths) // 8
        return super().gather(physicals, lengths, dst)


def scan(path: Path, rules: LoadedRuleset) -> tuple[Verdict, int]:
    source = CountedRaw(str(path))
    engine = Engine(EngineSettings(threads=2))
    try:
        verdict = engine.scan(rules, process_target(source))
    finally:
        engine.close()
    return verdict, source.reads


@pytest.fixture(scope="module")
def intact_reads(dumped: Dumped, nothing: LoadedRuleset) -> int:
    """Reads a scan of the intact dump makes: the baseline, from the same run, for 'quick'."""
    verdict, reads = scan(dumped.raw, nothing)
    assert verdict.kind is VerdictKind.CLEAN, reasons(verdict)
    return reads


def bounded(reads: int, intact_reads: int) -> bool:
    """A corrupted guest must not make the scan crawl: no more than twice the intact scan's reads."""
    print(f"reads: {reads} against {intact_reads} for the intact dump")
    return reads <= 2 * intact_reads


def corrupted_at(dumped: Dumped, tmp_path: Path, edit: Callable[[bytearray], None]) -> Path:
    """A copy of the raw dump (file offset = physical address) with ``edit`` applied to its bytes."""
    data = bytearray(dumped.raw.read_bytes())
    edit(data)
    out = tmp_path / "corrupt.raw"
    out.write_bytes(data)
    return out


def corrupted(dumped: Dumped, tmp_path: Path, edit: Callable[[LinuxKernel, bytearray], None]) -> Path:
    data = bytearray(dumped.raw.read_bytes())
    view = open_linux(RawMemory(str(dumped.raw))).kernel
    assert view is not None
    edit(view, data)
    out = tmp_path / "corrupt.raw"
    out.write_bytes(data)
    return out


def volatility(dumped: Dumped, tmp_path: Path, *plugin: str) -> list[dict[str, Any]]:
    """Rows of a Volatility 3 plugin run on the dump's ELF core (with the ISF of the dump's own
    BTF, and this directory's ``volatility_plugins``)."""
    symbols, cache = tmp_path / "symbols", tmp_path / "cache"
    if not symbols.exists():
        detection = open_linux(RawMemory(str(dumped.raw)))
        assert detection.kernel is not None and detection.profile is not None
        write_isf(detection.profile, detection.kernel, symbols)
        cache.mkdir()
    vol = shutil.which("vol", path=os.path.dirname(sys.executable))
    assert vol is not None, "volatility3 (a dev dependency) is not installed: run .ci/setup"
    args = ["-s", str(symbols), "-p", str(PLUGINS), "--cache-path", str(cache), "-f", str(dumped.elf)]
    argv = [vol, "-q", "-r", "json", *args, *plugin]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


def volatility_tasks(dumped: Dumped, tmp_path: Path) -> list[int]:
    """Virtual addresses of the task_structs in list order, from Volatility 3's linux.pslist:
    the corruption is placed where another implementation finds the list, not where the walker
    under test says it is."""
    rows = volatility(dumped, tmp_path, "linux.pslist.PsList")
    tasks = [canonical(int(row["OFFSET (V)"])) for row in rows]  # Volatility drops the sign bits
    assert len(tasks) > 8
    return tasks


def volatility_placement(dumped: Dumped, tmp_path: Path) -> dict[str, int]:
    """Where the first marker's maple tree root, that root's slot 0 and its page table are
    (physical addresses, and the root word), as Volatility 3 finds them."""
    pid = dumped.guest.marker_pids[0]
    [row] = volatility(dumped, tmp_path, "avscan_placement.MmPlacement", "--pid", str(pid))
    assert row["PID"] == pid
    return {k: int(v) for k, v in row.items() if k != "__children"}


def poke(view: LinuxKernel, data: bytearray, virtual: int, value: int) -> None:
    struct.pack_into("<Q", data, view.kmem.physical(virtual), value)


def reasons(verdict: Verdict) -> str:
    return " | ".join(f"{g.unit}: {g.detail}" for g in verdict.coverage.gaps)


def test_intact_dump_is_clean(intact_reads: int) -> None:
    assert intact_reads > 0  # the fixture checked the verdict is CLEAN


def test_task_list_looping_back_on_itself(
    dumped: Dumped, nothing: LoadedRuleset, tmp_path: Path, intact_reads: int
) -> None:
    tasks = volatility_tasks(dumped, tmp_path)  # where the tasks are, as Volatility 3 finds them

    def edit(view: LinuxKernel, data: bytearray) -> None:
        off = view.layout["task.tasks"]
        a, b = tasks[2] + off, tasks[8] + off
        poke(view, data, b, a)  # task 8 -> task 2: a loop that never comes back to init_task

    verdict, reads = scan(corrupted(dumped, tmp_path, edit), nothing)
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert "os:task list: tasks.next->prev does not point back" in reasons(verdict)
    assert bounded(reads, intact_reads)


def test_vma_with_an_absurd_range(dumped: Dumped, nothing: LoadedRuleset, tmp_path: Path, intact_reads: int) -> None:
    def edit(view: LinuxKernel, data: bytearray) -> None:
        # The guest's own /proc/<pid>/maps says where the marker's first VMA starts and ends; its
        # vm_area_struct is found by those two words in memory (a byte search, not the walker).
        first = next(p for p in dumped.processes if p.pid == dumped.guest.marker_pids[0]).maps[0]
        start_at, end_at = view.layout["vma.vm_start"], view.layout["vma.vm_end"]
        assert end_at == start_at + 8
        words = struct.pack("<QQ", first.start, first.end)
        hits: list[int] = []
        at = data.find(words)
        while at >= 0:
            hits.append(at - start_at)
            at = data.find(words, at + 1)
        assert hits, f"no vm_area_struct for {first.start:#x}-{first.end:#x} in memory"
        for vma in hits:  # every VMA with that range: each static busybox process maps it alike
            struct.pack_into("<Q", data, vma + end_at, 0xFFFF_FFFF_FFFF_F000)

    verdict, reads = scan(corrupted(dumped, tmp_path, edit), nothing)
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert "absurd VMA range" in reasons(verdict)
    assert bounded(reads, intact_reads)


def test_maple_tree_pointing_at_itself(
    dumped: Dumped, nothing: LoadedRuleset, tmp_path: Path, intact_reads: int
) -> None:
    at = volatility_placement(dumped, tmp_path)  # physical addresses, from Volatility 3

    def edit(data: bytearray) -> None:
        (root,) = struct.unpack_from("<Q", data, at["MA_ROOT_AT"])
        assert root == at["MA_ROOT"], "Volatility and the raw dump disagree on the root word"
        node = root & ~0xFF
        # Make the root an inner node (maple_range_64, root tag ...10) whose only slot (pivot 0 is
        # the largest index) is a well-formed child pointer (tag ...100) to the node itself.
        struct.pack_into("<Q", data, at["MA_ROOT_AT"], node | (MAPLE_RANGE_64 << 3) | 2)
        struct.pack_into("<Q", data, at["PIVOT0_AT"], (1 << 64) - 1)
        struct.pack_into("<Q", data, at["SLOT0_AT"], node | (MAPLE_RANGE_64 << 3) | 4)

    verdict, reads = scan(corrupted_at(dumped, tmp_path, edit), nothing)
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert f"pid {dumped.guest.marker_pids[0]}" in reasons(verdict)
    assert "memory map: maple tree node visited twice (a cycle)" in reasons(verdict)
    assert bounded(reads, intact_reads)


def test_page_tables_pointing_outside_ram(
    dumped: Dumped, nothing: LoadedRuleset, tmp_path: Path, intact_reads: int
) -> None:
    pgd = volatility_placement(dumped, tmp_path)["DTB"]  # the page table Volatility 3 walks

    def edit(data: bytearray) -> None:
        present = 0
        for index in range(256):  # every user-half entry that is present
            (entry,) = struct.unpack_from("<Q", data, pgd + 8 * index)
            if entry & PRESENT:
                struct.pack_into("<Q", data, pgd + 8 * index, 0x7F_0000_0000 | PRESENT | WRITABLE)
                present += 1
        assert present, f"no present user entry in the page table at {pgd:#x}"

    verdict, reads = scan(corrupted_at(dumped, tmp_path, edit), nothing)
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert f"pid {dumped.guest.marker_pids[0]}" in reasons(verdict)
    assert "outside guest memory" in reasons(verdict)
    assert bounded(reads, intact_reads)
