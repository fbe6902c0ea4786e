"""Matches that straddle two virtual pages held far apart in RAM are found by the default scan.

A real lab dump (busybox guest). Volatility 3 (with the ISF of the dump's own BTF) dumps the
marker process's ``[heap]``; each heap page is found in the raw dump by its bytes (a page whose
content occurs exactly once), which gives, without our page walker, two virtually consecutive
heap pages whose physical pages are not adjacent. A marker generated at test time is written
across their boundary in a copy of the dump, and Volatility, reading the copy, confirms the heap
holds it whole at that virtual address. The default scan (``os=auto``) must report it once, as a
page-seam finding naming the marker's pid and the exact virtual address; the plain physical scan
cannot see it. A marker inside one page near the seam is reported once, by the physical scan.
"""

from __future__ import annotations

import json
import mmap
import os
import secrets
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.acquisition.memory.raw import RawMemory
from scanner.engine import Engine, EngineSettings
from scanner.guestos.linux.detect import open_linux
from scanner.guestos.linux.isf import write_isf
from scanner.rulesets import LoadedRuleset, compile_path
from scanner.targets.awareness import AttributedMemoryTarget, memory_view
from scanner.targets.base import Target
from scanner.verdicts import Verdict, VerdictKind

from .conftest import Dumped

pytestmark = pytest.mark.lab
PAGE = 4096


@dataclass(frozen=True)
class HeapSeam:
    """Heap pages ``index`` and ``index + 1`` of the marker: at ``first``/``second`` in the raw dump."""

    heap_start: int
    index: int
    first: int
    second: int

    @property
    def boundary(self) -> int:
        return self.heap_start + (self.index + 1) * PAGE


def volatility_region(raw: Path, pid: int, work: Path, path: str = "[heap]", flags: str = "rw-") -> tuple[int, bytes]:
    """(start, bytes) of ``pid``'s first region of ``path`` with ``flags``, as Volatility 3's
    ``linux.proc.Maps --dump`` reads it."""
    symbols, cache, out = work / "symbols", work / "cache", work / "maps"
    if not symbols.exists():
        detection = open_linux(RawMemory(str(raw)))
        assert detection.kernel is not None and detection.profile is not None
        write_isf(detection.profile, detection.kernel, symbols)
    cache.mkdir(exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    vol = shutil.which("vol", path=os.path.dirname(sys.executable))
    assert vol is not None, "volatility3 (a dev dependency) is not installed: run .ci/setup"
    argv = [vol, "-q", "-r", "json", "-s", str(symbols), "--cache-path", str(cache), "-f", str(raw)]
    argv += ["-o", str(out), "linux.proc.Maps", "--pid", str(pid), "--dump"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = next(r for r in json.loads(proc.stdout) if r["File Path"] == path and r["Flags"] == flags)
    return int(row["Start"]), (out / str(row["File output"])).read_bytes()


def unique_place(raw: mmap.mmap, page: bytes) -> int | None:
    """The physical address of the only copy of ``page`` in the raw dump (page aligned), else None."""
    if page == bytes(len(page)):
        return None
    first = raw.find(page)
    if first < 0 or first % PAGE or raw.find(page, first + 1) >= 0:
        return None
    return first


def far_apart(raw_path: Path, start: int, region: bytes) -> HeapSeam:
    """The first two consecutive pages of ``region`` (at ``start``) found alone in RAM, not adjacent."""
    with raw_path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as raw:
        places = [unique_place(raw, region[i : i + PAGE]) for i in range(0, len(region), PAGE)]
    for i in range(len(places) - 1):
        a, b = places[i], places[i + 1]
        if a is not None and b is not None and b != a + PAGE:
            return HeapSeam(start, i, a, b)
    pytest.fail(f"no two consecutive pages far apart in RAM: {places}")


@pytest.fixture(scope="module")
def seam(dumped: Dumped, tmp_path_factory: pytest.TempPathFactory) -> HeapSeam:
    work = tmp_path_factory.mktemp("seam-vol")
    return far_apart(dumped.raw, *volatility_region(dumped.raw, dumped.guest.marker_pids[0], work))


def marker_and_rule(tmp_path: Path) -> tuple[bytes, LoadedRuleset]:
    """A fresh EICAR-style marker (made now, in no file) and a rule that matches it."""
    marker = b"AVSCAN-STRADDLE-TEST-" + secrets.token_hex(16).encode() + b"-NOT-MALWARE"
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "straddle.yar").write_text(
        f'rule Straddle {{ strings: $m = "{marker.decode()}" condition: $m }}\n'
    )
    return marker, compile_path(tmp_path / "rules")


def placed(dumped: Dumped, tmp_path: Path, writes: list[tuple[int, bytes]]) -> Path:
    """A copy of the dump with ``(physical address, bytes)`` written."""
    out = tmp_path / "placed.raw"
    shutil.copyfile(dumped.raw, out)
    with out.open("r+b") as f:
        for at, data in writes:
            f.seek(at)
            f.write(data)
    return out


def scan(target: Target, rules: LoadedRuleset) -> Verdict:
    engine = Engine(EngineSettings(threads=2))
    try:
        with target:
            return engine.scan(rules, target)
    finally:
        engine.close()


def test_a_marker_straddling_far_apart_heap_pages_is_found_and_attributed(
    dumped: Dumped, seam: HeapSeam, tmp_path: Path
) -> None:
    marker, rules = marker_and_rule(tmp_path)
    split = 21  # bytes of the marker at the end of the first page
    raw = placed(dumped, tmp_path, [(seam.first + PAGE - split, marker[:split]), (seam.second, marker[split:])])
    at = seam.boundary - split
    start, heap = volatility_region(raw, dumped.guest.marker_pids[0], tmp_path)  # the oracle reads the copy
    assert heap[at - start : at - start + len(marker)] == marker

    physical = scan(AttributedMemoryTarget(RawMemory(str(raw)), profile_cache=tmp_path, seams=False), rules)
    assert physical.kind is VerdictKind.CLEAN  # the premise: RAM read page by page cannot see it

    verdict = scan(memory_view(RawMemory(str(raw)), {"os": "auto"}, tmp_path), rules)
    assert verdict.kind is VerdictKind.MALICIOUS, verdict.coverage.gaps[:3]
    [finding] = [f for f in verdict.findings if f.rule == "Straddle"]
    pid = dumped.guest.marker_pids[0]
    assert finding.unit_kind == "process-seam"
    assert finding.address == at
    assert finding.context["pid"] == str(pid)
    assert finding.context["process"] == "avscan-marker"
    assert finding.context["virtual_address"] == f"{at:#x}"
    assert "[heap]" in finding.context["region"]
    [string] = finding.strings
    assert string.data == marker[: len(string.data)] and string.physical == seam.first + PAGE - split
    counts = verdict.coverage.accounting
    assert counts["processes.seams"] > 0 and counts["processes.walked"] == counts["processes.listed"]
    assert verdict.coverage.complete


def test_a_marker_inside_one_page_next_to_a_seam_is_reported_once(
    dumped: Dumped, seam: HeapSeam, tmp_path: Path
) -> None:
    marker, rules = marker_and_rule(tmp_path)
    before = seam.first + PAGE - len(marker) - 3  # ends 3 bytes before the boundary
    after = seam.second + 5  # starts 5 bytes after it
    raw = placed(dumped, tmp_path, [(before, marker), (after, marker)])
    verdict = scan(memory_view(RawMemory(str(raw)), {"os": "auto"}, tmp_path), rules)
    found = [f for f in verdict.findings if f.rule == "Straddle"]
    assert [f.unit_kind for f in found] == ["memory"]  # one physical finding, no seam finding
    assert sorted(s.physical for s in found[0].strings) == sorted([before, after])
    assert verdict.coverage.accounting["processes.seams"] > 0


def test_a_seam_of_a_shared_file_is_scanned_once_and_named_in_every_process(dumped: Dumped, tmp_path: Path) -> None:
    # /bin/busybox's text is one set of page-cache pages mapped by every busybox process
    marker_pid, clean_pid = dumped.guest.marker_pids[0], dumped.guest.clean_pid
    text = far_apart(dumped.raw, *volatility_region(dumped.raw, marker_pid, tmp_path, "/bin/busybox", "r-x"))
    marker, rules = marker_and_rule(tmp_path)
    split = 30
    raw = placed(dumped, tmp_path, [(text.first + PAGE - split, marker[:split]), (text.second, marker[split:])])
    at = text.boundary - split
    for pid in (marker_pid, clean_pid):  # Volatility reads the marker in both processes' text
        start, region = volatility_region(raw, pid, tmp_path, "/bin/busybox", "r-x")
        assert region[at - start : at - start + len(marker)] == marker
    verdict = scan(memory_view(RawMemory(str(raw)), {"os": "auto"}, tmp_path), rules)
    [finding] = [f for f in verdict.findings if f.rule == "Straddle"]
    assert finding.unit_kind == "process-seam"
    pids = finding.context["pid"].split(",")
    assert {str(marker_pid), str(clean_pid)} <= set(pids)
    assert finding.context["virtual_address"].split(",") == [f"{at:#x}"] * len(pids)
    assert all("/bin/busybox" in r for r in finding.context["region"].split(" | "))


def test_seams_past_the_cap_are_a_gap(dumped: Dumped, tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "none.yar").write_text('rule Never { strings: $a = "avscan-never-9b1e2d" condition: $a }\n')
    rules = compile_path(tmp_path / "rules")
    whole = scan(memory_view(RawMemory(str(dumped.raw)), {"os": "auto"}, tmp_path), rules)
    assert whole.kind is VerdictKind.CLEAN and whole.coverage.accounting["processes.seams"] > 2
    capped = scan(AttributedMemoryTarget(RawMemory(str(dumped.raw)), profile_cache=tmp_path, max_seams=2), rules)
    assert capped.kind is VerdictKind.INCOMPLETE
    [gap] = capped.coverage.gaps
    assert gap.unit == "seams:cap" and "past the cap of 2 distinct seams" in gap.detail
    assert capped.coverage.accounting["processes.seams"] == 2
    assert capped.coverage.accounting["processes.seams_over_cap"] > 0


def test_a_process_whose_page_tables_cannot_be_read_is_a_gap_not_a_clean_scan(dumped: Dumped, tmp_path: Path) -> None:
    # the marker's mm->pgd is pointed at a kernel address nothing maps: its seams cannot be listed
    view = open_linux(RawMemory(str(dumped.raw))).kernel
    assert view is not None
    pid = dumped.guest.marker_pids[0]
    proc = next(p for p in view.processes().processes if p.pid == pid)
    data = bytearray(dumped.raw.read_bytes())
    struct.pack_into("<Q", data, view.kmem.physical(proc.mm + view.layout["mm.pgd"]), 0xFFFF_FFFF_FFFF_0000)
    raw = tmp_path / "no-tables.raw"
    raw.write_bytes(data)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "none.yar").write_text('rule Never { strings: $a = "avscan-never-4e0b7c" condition: $a }\n')
    verdict = scan(memory_view(RawMemory(str(raw)), {"os": "auto"}, tmp_path), compile_path(tmp_path / "rules"))
    assert verdict.kind is VerdictKind.INCOMPLETE
    [gap] = verdict.coverage.gaps
    assert gap.unit.startswith(f"seams:pid {pid} (avscan-marker)") and "page seams not scanned" in gap.detail
    assert verdict.coverage.accounting["processes.failed"] == 1


def test_the_seam_walk_attributes_physical_findings_as_the_reverse_map_does(dumped: Dumped) -> None:
    # the default scan names owners from the seam walk's mappings instead of walking again
    from scanner.guestos.linux.reverse import reverse_map
    from scanner.guestos.linux.seams import find_seams, reverse_from

    view = open_linux(RawMemory(str(dumped.raw))).kernel
    assert view is not None
    found = find_seams(view, 1 << 16)
    assert found.mappings
    addresses = [m[0] + 100 for m in found.mappings[::7]] + [0x1000]  # every 7th run, and a page no one maps
    ours, walked = reverse_from(found, addresses), reverse_map(view, addresses)
    assert ours.owners == walked.owners and len(ours.owners) == len(set(addresses)) - 1
    assert ours.accounting() == walked.accounting()
