"""Engine contracts: chunk overlap, limits as gaps, cancellation, parallel == serial."""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yara
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.acquisition.memory.raw import RawMemory
from scanner.engine import Engine, EngineSettings, ScanListener
from scanner.engine.windows import plan_windows
from scanner.targets.buffer import BufferTarget
from scanner.targets.memory import MemoryTarget
from scanner.verdicts import GapKind, VerdictKind

MARKER = b"AVSCAN-TEST-MARKER-" + b"0123456789"
EXTERNALS = {"filename": "", "filepath": "", "extension": "", "filetype": "", "owner": ""}


@dataclass
class Rules:
    rules: Any
    digest: str = "sha256:" + "0" * 64
    externals: dict[str, str] = field(default_factory=lambda: dict(EXTERNALS))


def compile_rules(source: str) -> Rules:
    return Rules(yara.compile(source=source, externals=EXTERNALS))


MARKER_RULE = compile_rules('rule marker { meta: severity = 90 strings: $m = "' + MARKER.decode() + '" condition: $m }')


FILLER = bytes(range(1, 256)) * 4112  # about 1 MiB of non-zero bytes with no marker in it


def image(tmp_path: Path, size: int, plants: dict[int, bytes], zero: bool = False) -> Path:
    """A raw image of ``size`` bytes (non-zero filler unless ``zero``) with ``plants`` written in."""
    path = tmp_path / "mem.raw"
    with path.open("wb") as f:
        f.truncate(size)
        for offset in range(0, 0 if zero else size, len(FILLER)):
            f.seek(offset)
            f.write(FILLER[: size - offset])
        for offset, data in plants.items():
            f.seek(offset)
            f.write(data)
    return path


def scan_image(path: Path, engine: Engine, rules: Rules = MARKER_RULE, **kw: Any):
    with MemoryTarget(RawMemory(str(path))) as target:
        return engine.scan(rules, target, **kw)


CHUNK = 64 * 1024
OVERLAP = 4096


@pytest.fixture
def engine():
    e = Engine(EngineSettings(threads=2, chunk_size=CHUNK, overlap=OVERLAP))
    yield e
    e.close()


def test_marker_across_chunk_boundary_found_exactly_once(tmp_path, engine):
    for delta in (1, len(MARKER) // 2, len(MARKER) - 1):
        path = image(tmp_path, 8 * CHUNK, {CHUNK - delta: MARKER})
        verdict = scan_image(path, engine)
        assert verdict.kind is VerdictKind.MALICIOUS
        [finding] = verdict.findings
        assert [s.address for s in finding.strings] == [CHUNK - delta]
        assert verdict.coverage.bytes_scanned == 8 * CHUNK


def test_marker_in_overlap_region_and_next_window_found_once(tmp_path, engine):
    plants = {CHUNK + 10: MARKER, 3 * CHUNK - 3: MARKER}
    verdict = scan_image(image(tmp_path, 4 * CHUNK, plants), engine)
    [finding] = verdict.findings
    assert [s.address for s in finding.strings] == sorted(plants)


def test_clean_image_is_clean_with_full_coverage(tmp_path, engine):
    verdict = scan_image(image(tmp_path, 5 * CHUNK + 123, {}), engine)
    assert verdict.kind is VerdictKind.CLEAN
    assert verdict.coverage.complete
    assert verdict.coverage.bytes_scanned == verdict.coverage.bytes_total == 5 * CHUNK + 123


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    offsets=st.lists(st.integers(0, 6 * CHUNK - len(MARKER)), min_size=0, max_size=6, unique=True),
    threads=st.integers(1, 3),
)
def test_chunked_parallel_scan_equals_one_plain_match(tmp_path_factory, offsets, threads):
    """Property: the engine's hits equal plain yara.match over the whole buffer."""
    offsets = [o for o in offsets if all(abs(o - p) >= len(MARKER) for p in offsets if p != o)]
    tmp = tmp_path_factory.mktemp("prop")
    path = image(tmp, 6 * CHUNK, dict.fromkeys(offsets, MARKER))
    plain = MARKER_RULE.rules.match(data=path.read_bytes())
    expected = sorted(i.offset for m in plain for s in m.strings for i in s.instances)
    e = Engine(EngineSettings(threads=threads, chunk_size=CHUNK, overlap=OVERLAP))
    try:
        verdict = scan_image(path, e)
    finally:
        e.close()
    got = sorted(s.address for f in verdict.findings for s in f.strings)
    assert got == expected


def test_truncated_image_reports_unreadable_never_clean(tmp_path, engine):
    path = image(tmp_path, 8 * CHUNK, {})
    source = RawMemory(str(path))
    os.truncate(path, 3 * CHUNK)  # the dump shrinks under the scanner (guest killed, copy aborted)
    with MemoryTarget(source) as target:
        verdict = engine.scan(MARKER_RULE, target)
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert verdict.coverage.bytes_unreadable >= 4 * CHUNK
    assert {g.kind for g in verdict.coverage.gaps} == {GapKind.UNREADABLE}
    assert "unreadable" in verdict.reason


def test_unit_deadline_makes_the_rest_of_the_unit_a_timeout_gap(tmp_path):
    path = image(tmp_path, 32 * CHUNK, {20 * CHUNK: MARKER})
    e = Engine(EngineSettings(threads=1, chunk_size=CHUNK, overlap=OVERLAP, unit_timeout=1e-6))
    try:
        verdict = scan_image(path, e)
    finally:
        e.close()
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert {g.kind for g in verdict.coverage.gaps} == {GapKind.TIMEOUT}
    assert verdict.coverage.bytes_skipped > 0


def test_too_many_matches_is_a_gap_and_keeps_the_finding():
    rules = compile_rules('rule many { strings: $a = "ab" condition: $a }')
    e = Engine(EngineSettings(threads=1, max_matches_per_string=100, max_strings_per_finding=5))
    try:
        verdict = e.scan(rules, BufferTarget("buf", b"ab" * 1000))
    finally:
        e.close()
    assert verdict.kind is VerdictKind.MALICIOUS
    assert not verdict.coverage.complete
    assert GapKind.TOO_MANY_MATCHES in {g.kind for g in verdict.coverage.gaps}
    [finding] = verdict.findings
    assert len(finding.strings) == 5 and finding.strings_truncated


def test_cancel_turns_the_rest_into_cancelled_gaps(tmp_path):
    path = image(tmp_path, 64 * CHUNK, {})
    cancel = threading.Event()

    class CancelAfterStart(ScanListener):
        def on_progress(self, progress):
            cancel.set()

    e = Engine(EngineSettings(threads=1, chunk_size=CHUNK, overlap=OVERLAP))
    try:
        verdict = scan_image(path, e, listener=CancelAfterStart(), cancel=cancel)
    finally:
        e.close()
    assert verdict.kind is VerdictKind.INCOMPLETE
    cancelled = [g for g in verdict.coverage.gaps if g.kind is GapKind.CANCELLED]
    assert cancelled
    assert verdict.coverage.bytes_scanned + sum(g.length for g in cancelled) == 64 * CHUNK


def test_severity_below_threshold_is_suspicious():
    rules = compile_rules('rule low { meta: severity = 40 strings: $a = "needle" condition: $a }')
    e = Engine(EngineSettings(threads=1))
    try:
        verdict = e.scan(rules, BufferTarget("buf", b"hay needle hay"))
    finally:
        e.close()
    assert verdict.kind is VerdictKind.SUSPICIOUS
    assert verdict.findings[0].severity == 40


def test_windows_cover_every_byte_once_as_owner():
    for size in (0, 1, CHUNK, CHUNK + OVERLAP, CHUNK + OVERLAP + 1, 10 * CHUNK + 7):
        windows = list(plan_windows(size, CHUNK, OVERLAP, chunkable=True))
        owned = sum(w.own_end - w.offset for w in windows)
        assert owned == size
        assert all(w.offset + w.length <= size for w in windows)
        assert all(a.own_end == b.offset for a, b in itertools.pairwise(windows))


MiB = 1024 * 1024


def test_zero_blocks_are_skipped_and_accounted_without_losing_matches(tmp_path):
    # markers right at the edges of zero blocks: just before one, just after one, and inside
    plants = {2 * MiB - 5: MARKER, 5 * MiB + 1: MARKER, 9 * MiB + 4321: MARKER}
    path = image(tmp_path, 12 * MiB, plants, zero=True)
    skipping = Engine(EngineSettings(threads=2, chunk_size=CHUNK * 16, overlap=OVERLAP))
    plain = Engine(EngineSettings(threads=2, chunk_size=CHUNK * 16, overlap=OVERLAP, skip_zero_blocks=False))
    try:
        fast, slow = scan_image(path, skipping), scan_image(path, plain)
    finally:
        skipping.close()
        plain.close()
    addresses = sorted(s.address for f in fast.findings for s in f.strings)
    assert addresses == sorted(plants) == sorted(s.address for f in slow.findings for s in f.strings)
    c = fast.coverage
    assert c.complete and fast.kind is VerdictKind.MALICIOUS
    assert c.bytes_zero >= 7 * MiB  # 9 of the 12 blocks are zero; overlaps reach into them
    assert c.bytes_scanned + c.bytes_zero == c.bytes_total == 12 * MiB
    assert slow.coverage.bytes_zero == 0


def test_all_zero_image_is_clean_and_fully_covered(tmp_path):
    path = image(tmp_path, 4 * MiB, {}, zero=True)
    e = Engine(EngineSettings(threads=1))
    try:
        verdict = scan_image(path, e)
    finally:
        e.close()
    assert verdict.kind is VerdictKind.CLEAN
    assert verdict.coverage.bytes_zero == 4 * MiB and verdict.coverage.units_scanned == 1


class _CountedTarget(BufferTarget):
    """A target whose bookkeeping says two objects exist and one was reached."""

    def accounting(self):
        return {"v.files_allocated": 2, "v.files_reached": 1}


def test_target_accounting_travels_with_the_verdict_and_its_stored_form(engine):
    from scanner.api.convert import verdict_message
    from scanner.state.codec import verdict_from_dict, verdict_to_dict

    verdict = engine.scan(MARKER_RULE, _CountedTarget("b", MARKER))
    assert dict(verdict.coverage.accounting) == {"v.files_allocated": 2, "v.files_reached": 1}
    assert dict(verdict_from_dict(verdict_to_dict(verdict)).coverage.accounting) == dict(verdict.coverage.accounting)
    assert dict(verdict_message(verdict, with_findings=False).coverage.accounting) == {
        "v.files_allocated": 2,
        "v.files_reached": 1,
    }
