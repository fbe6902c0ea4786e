"""Seam batches through the real engine and libyara, over a raw memory file built here.

The seams are placed by hand (which physical page follows which virtually), so each rule of the
batch contract (``scanner.targets.batch``) is checked on its own: only straddling matches, the
condition judged on the member alone, no bound lost in the batch-wide pass, one finding per seam
with every owner's own virtual address.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.acquisition.memory.raw import RawMemory
from scanner.engine import Engine, EngineSettings
from scanner.guestos.linux.seams import Seam, SeamMap, SeamOwner
from scanner.rulesets import LoadedRuleset, compile_path
from scanner.targets.base import Skipped, Target, Unit
from scanner.targets.seams import SeamBatch, seam_units
from scanner.verdicts import Verdict, VerdictKind

PAGE = 4096
CONTEXT = 256


class Seams(Target):
    kind = "seams"

    def __init__(self, source: RawMemory, found: SeamMap) -> None:
        self.source, self.found = source, found

    def plan(self) -> list[Unit | Skipped]:  # type: ignore[override]
        return list(seam_units(self.source, self.found, CONTEXT))

    def close(self) -> None:
        self.source.close()


def memory(tmp_path: Path, writes: dict[int, bytes], pages: int = 16) -> RawMemory:
    data = bytearray(b"." * pages * PAGE)
    for at, blob in writes.items():
        data[at : at + len(blob)] = blob
    path = tmp_path / "ram.raw"
    path.write_bytes(data)
    return RawMemory(str(path))


def seam_map(*seams: tuple[int, int, list[tuple[int, int]]]) -> SeamMap:
    """Seams (page before, page after, [(pid, virtual address of the boundary)])."""
    found = SeamMap()
    for before, after, owners in seams:
        seam = Seam((before + 1) * PAGE, after * PAGE)
        seam.owners = [SeamOwner(pid, f"proc{pid}", va, "rw-p [heap]") for pid, va in owners]
        seam.mapped = len(owners)
        found.seams[(seam.before, seam.after)] = seam
    return found


def rules(tmp_path: Path, source: str) -> LoadedRuleset:
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    (d / "r.yar").write_text(source)
    return compile_path(d)


def scan(target: Target, ruleset: LoadedRuleset, **settings: int) -> Verdict:
    engine = Engine(EngineSettings(threads=2, **settings))
    try:
        with target:
            return engine.scan(ruleset, target)
    finally:
        engine.close()


def test_each_seam_is_its_own_finding_named_by_every_process_that_maps_it(tmp_path: Path) -> None:
    # page 1 is followed (virtually) by page 7 in two processes, page 3 by page 12 in one
    source = memory(
        tmp_path, {2 * PAGE - 9: b"STRADDLE-", 7 * PAGE: b"MARK", 4 * PAGE - 3: b"STR", 12 * PAGE: b"ADDLE-MARK"}
    )
    found = seam_map((1, 7, [(10, 0x5000), (11, 0x9000)]), (3, 12, [(12, 0x20000)]))
    ruleset = rules(tmp_path, 'rule S { strings: $s = "STRADDLE-MARK" condition: $s }\n')
    verdict = scan(Seams(source, found), ruleset)
    assert verdict.kind is VerdictKind.MALICIOUS
    by_pid = {f.context["pid"]: f for f in verdict.findings}
    assert set(by_pid) == {"10,11", "12"}
    shared, single = by_pid["10,11"], by_pid["12"]
    assert shared.context["virtual_address"] == f"{0x5000 - 9:#x},{0x9000 - 9:#x}"
    assert shared.address == 0x5000 - 9 and shared.strings[0].physical == 2 * PAGE - 9
    assert single.context["virtual_address"] == f"{0x20000 - 3:#x}" and single.context["process"] == "proc12"
    assert single.strings[0].data == b"STRADDLE-MARK"


def test_a_rule_is_judged_on_the_seam_alone_not_on_its_neighbours_in_the_batch(tmp_path: Path) -> None:
    # $a straddles the first seam; $b lies in the second seam's context only (crossing nothing)
    source = memory(tmp_path, {2 * PAGE - 2: b"AA", 7 * PAGE: b"AA", 4 * PAGE - 20: b"BBBBBB"})
    found = seam_map((1, 7, [(10, 0x5000)]), (3, 12, [(12, 0x20000)]))
    both = rules(tmp_path, 'rule Both { strings: $a = "AAAA" $b = "BBBBBB" condition: $a and $b }\n')
    verdict = scan(Seams(source, found), both)
    assert verdict.kind is VerdictKind.CLEAN, [f.context for f in verdict.findings]
    alone = rules(tmp_path, 'rule A { strings: $a = "AAAA" condition: $a }\n')  # the premise: $a straddles
    assert [
        f.context["pid"]
        for f in scan(Seams(memory(tmp_path, {2 * PAGE - 2: b"AA", 7 * PAGE: b"AA"}), found), alone).findings
    ] == ["10"]


def test_a_straddling_match_is_found_after_many_matches_elsewhere_in_the_batch(tmp_path: Path) -> None:
    # 60 copies of the string in the first member's context (none crossing), then one straddling
    many = {2 * PAGE - CONTEXT + 8 * i: b"ZQZQ" for i in range(30)} | {7 * PAGE + 8 * i + 4: b"ZQZQ" for i in range(30)}
    source = memory(tmp_path, {**many, 4 * PAGE - 2: b"ZQ", 12 * PAGE: b"ZQ"})
    found = seam_map((1, 7, [(10, 0x5000)]), (3, 12, [(12, 0x20000)]))
    verdict = scan(Seams(source, found), rules(tmp_path, 'rule Z { strings: $z = "ZQZQ" condition: $z }\n'))
    [finding] = verdict.findings
    assert finding.context["pid"] == "12" and finding.address == 0x20000 - 2


def test_many_seams_are_batched(tmp_path: Path) -> None:
    source = memory(tmp_path, {}, pages=64)
    found = seam_map(*((i, 63 - i, [(1, 0x100000 + i * PAGE)]) for i in range(20)))
    units = list(seam_units(source, found, CONTEXT))
    [batch] = units
    assert isinstance(batch, SeamBatch) and len(batch.members) == 20 and batch.size == 20 * 2 * CONTEXT
    source.close()


def test_a_context_past_a_page_is_refused(tmp_path: Path) -> None:
    source = memory(tmp_path, {})
    with pytest.raises(ValueError, match="seam context"):
        list(seam_units(source, seam_map((1, 7, [(1, 0x5000)])), PAGE + 1))
    source.close()
