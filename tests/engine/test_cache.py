"""The result cache: identical findings with and without it, hits across guests and rescans,
never a stale or partial result, bounded and persistent."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yara
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner import native
from scanner.acquisition.memory.raw import RawMemory
from scanner.config import load_config
from scanner.engine import Engine, EngineSettings
from scanner.engine.cache import ResultCache
from scanner.targets.base import Skipped, Target, Unit
from scanner.targets.buffer import BufferTarget
from scanner.targets.files import FileTarget
from scanner.targets.memory import MemoryTarget
from scanner.verdicts import GapKind, VerdictKind

MiB = 1024 * 1024
MARKER = b"AVSCAN-CACHE-MARKER-0123456789"
EXTERNALS = {"filename": "", "filepath": "", "extension": "", "filetype": "", "owner": ""}
SOURCE = (
    'rule marker { meta: severity = 90 strings: $m = "'
    + MARKER.decode()
    + '" $n = "NEEDLE" condition: $m or ($n and false) }\n'
    'rule two { strings: $a = "NEEDLE" condition: #a >= 2 }\n'
    'rule named { condition: filename == "evil.bin" }\n'
)


@dataclass
class Rules:
    rules: Any
    digest: str
    externals: dict[str, str] = field(default_factory=lambda: dict(EXTERNALS))


RULES = Rules(yara.compile(source=SOURCE, externals=EXTERNALS), "sha256:" + "1" * 64)
OTHER = Rules(RULES.rules, "sha256:" + "2" * 64)
FILLER = bytes(range(1, 256)) * 4200


def write_image(path: Path, blocks: list[str], plants: dict[int, bytes]) -> Path:
    """One MiB per entry of ``blocks``: "z" zero, "f" filler, "r<n>" filler rotated by n."""
    with path.open("wb") as f:
        for b in blocks:
            if b == "z":
                f.write(bytes(MiB))
            else:
                shift = int(b[1:] or 0)
                f.write((FILLER[shift:] + FILLER[:shift])[:MiB])
        for offset, data in plants.items():
            f.seek(offset)
            f.write(data)
    return path


def scan(engine: Engine, path: Path, rules: Rules = RULES):
    with MemoryTarget(RawMemory(str(path))) as target:
        return engine.scan(rules, target)


def summary(verdict) -> list[tuple]:
    return sorted(
        (f.namespace, f.rule, f.unit, f.offset, f.address, f.strings_truncated,
         tuple((s.identifier, s.offset, s.address, s.length, s.data, s.physical) for s in f.strings))
        for f in verdict.findings
    )  # fmt: skip


@pytest.fixture
def cache(tmp_path):
    c = ResultCache(tmp_path / "cache.sqlite3", max_bytes=64 * MiB)
    yield c
    c.close()


def engines(cache, threads=2, **kw):
    s = EngineSettings(threads=threads, chunk_size=2 * MiB, overlap=4096, **kw)
    return Engine(s), Engine(s, cache)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    blocks=st.lists(st.sampled_from(["z", "f", "r1", "r7"]), min_size=1, max_size=9),
    plants=st.lists(st.tuples(st.integers(0, 9 * MiB), st.sampled_from([MARKER, b"NEEDLE"])), max_size=6),
    threads=st.integers(1, 3),
)
def test_findings_with_cache_cold_and_warm_equal_a_plain_scan(tmp_path_factory, blocks, plants, threads):
    """Property: plain engine == cached engine (cold) == cached engine (warm) == one yara.match."""
    tmp = tmp_path_factory.mktemp("prop")
    size = len(blocks) * MiB
    kept: dict[int, bytes] = {}
    for offset, data in plants:  # non-overlapping plants inside the image
        if offset + len(data) <= size and all(abs(offset - o) >= len(MARKER) for o in kept):
            kept[offset] = data
    path = write_image(tmp / "mem.raw", blocks, kept)
    cache = ResultCache(tmp / "cache.sqlite3")
    plain, cached = engines(cache, threads)
    try:
        want = summary(scan(plain, path))
        cold = scan(cached, path)
        warm = scan(cached, path)
    finally:
        plain.close()
        cached.close()
        cache.close()
    assert summary(cold) == want == summary(warm)
    assert cold.kind == warm.kind and cold.coverage.complete and warm.coverage.complete
    # every window looked up once per scan; a cold scan can already hit a window whose twin it
    # scanned earlier in the same image
    assert warm.coverage.cache_misses == 0
    assert warm.coverage.cache_hits == cold.coverage.cache_hits + cold.coverage.cache_misses
    assert cold.coverage.bytes_scanned + cold.coverage.bytes_zero == size
    whole = yara.compile(source=SOURCE, externals=EXTERNALS).match(data=path.read_bytes())
    expect = sorted(i.offset for m in whole if m.rule == "marker" for s in m.strings if s.identifier == "$m"
                    for i in s.instances)  # fmt: skip
    got = sorted(s.address for f in warm.findings if f.rule == "marker" for s in f.strings if s.identifier == "$m")
    assert got == expect


def test_a_second_guest_pays_only_for_the_blocks_that_differ(tmp_path, cache):
    layout = ["f", "r1", "z", "r2", "r3", "z", "z", "r4", "r5", "r6", "r7", "r8"]
    a = write_image(tmp_path / "a.raw", layout, {})
    b = write_image(tmp_path / "b.raw", layout, {9 * MiB + 100: MARKER})  # the clone differs in one block
    plain, cached = engines(cache)
    try:
        first = scan(cached, a)
        second = scan(cached, b)
        assert summary(second) == summary(scan(plain, b))
    finally:
        plain.close()
        cached.close()
    assert first.kind is VerdictKind.CLEAN and second.kind is VerdictKind.MALICIOUS
    assert [s.address for s in second.findings[0].strings] == [9 * MiB + 100]
    # 2 MiB cells: [0,2) [3,4) [4,5) [7,8) [8,10) [10,12); only the cell holding block 9 changed
    assert (first.coverage.cache_misses, first.coverage.cache_hits) == (6, 0)
    assert (second.coverage.cache_misses, second.coverage.cache_hits) == (1, 5)


def test_a_new_ruleset_does_not_reuse_old_results(tmp_path, cache):
    path = write_image(tmp_path / "m.raw", ["f", "f"], {100: MARKER})
    _, cached = engines(cache)
    try:
        scan(cached, path, RULES)
        other = scan(cached, path, OTHER)
        again = scan(cached, path, RULES)
    finally:
        cached.close()
    assert other.coverage.cache_hits == 0 and other.coverage.cache_misses > 0
    assert again.coverage.cache_misses == 0 and again.kind is VerdictKind.MALICIOUS


def test_incomplete_results_are_never_cached(cache):
    rules = Rules(yara.compile(source='rule many { strings: $a = "ab" condition: $a }'), "sha256:" + "3" * 64, {})
    e = Engine(EngineSettings(threads=1, max_matches_per_string=100), cache)
    try:
        first = e.scan(rules, BufferTarget("buf", b"ab" * 1000))
        second = e.scan(rules, BufferTarget("buf", b"ab" * 1000))
    finally:
        e.close()
    for v in (first, second):
        assert GapKind.TOO_MANY_MATCHES in {g.kind for g in v.coverage.gaps}
        assert v.coverage.cache_hits == 0 and v.coverage.cache_misses == 1
    assert len(cache) == 0


def test_files_hit_by_content_and_keep_their_name_semantics(tmp_path, cache):
    """Same bytes under another name hit only when the name cannot change the result."""
    data = b"hello " * 1000 + MARKER
    for name in ("a.bin", "b.bin", "evil.bin"):
        (tmp_path / name).write_bytes(data)
    e = Engine(EngineSettings(threads=2), cache)
    try:
        v1 = e.scan(RULES, FileTarget([str(tmp_path / "a.bin")]))
        v2 = e.scan(RULES, FileTarget([str(tmp_path / "a.bin")]))
        v3 = e.scan(RULES, FileTarget([str(tmp_path / "evil.bin")]))
    finally:
        e.close()
    assert (v1.coverage.cache_misses, v2.coverage.cache_hits) == (1, 1)
    assert [f.rule for f in v1.findings] == [f.rule for f in v2.findings] == ["marker"]
    assert sorted(f.rule for f in v3.findings) == ["marker", "named"]  # filename is in the key
    assert v2.findings[0].context["sha256"] == v1.findings[0].context["sha256"]


def test_cache_persists_across_restarts_and_stays_bounded(tmp_path):
    path = tmp_path / "c.sqlite3"
    c = ResultCache(path, max_bytes=1 * MiB)
    seed = c.seed
    for i in range(20_000):
        c.put(i.to_bytes(32, "big"), [["ns", "r", [], {"i": i}, False, []]])
        if i % 100 == 0:
            assert c.get((0).to_bytes(32, "big")) is not None  # kept warm: survives eviction
    assert c.size_bytes <= 1 * MiB
    c.close()
    c = ResultCache(path, max_bytes=1 * MiB)
    try:
        assert c.seed == seed
        assert c.get((0).to_bytes(32, "big")) == [["ns", "r", [], {"i": 0}, False, []]]
        assert c.get((1).to_bytes(32, "big")) is None  # least recently used: evicted
        assert c.get((19_999).to_bytes(32, "big")) is not None
    finally:
        c.close()


def test_a_corrupt_cache_file_is_moved_aside(tmp_path):
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"not a database" * 100)
    c = ResultCache(path)
    try:
        c.put(b"k" * 32, [])
        assert c.get(b"k" * 32) == []
    finally:
        c.close()
    assert list(tmp_path.glob("c.sqlite3.bad-*"))
    sqlite3.connect(path).close()


def test_config_cache_table(tmp_path):
    conf = tmp_path / "avscan.toml"
    conf.write_text('[cache]\nenabled = false\nmax_bytes = 2097152\npath = "/tmp/x.sqlite3"\n')
    c = load_config(conf).cache
    assert (c.enabled, c.max_bytes, c.path) == (False, 2 * MiB, "/tmp/x.sqlite3")
    assert load_config().cache.enabled


def test_the_app_shares_one_cache_with_its_engine(tmp_path):
    from scanner.app import App

    app = App(load_config(state_dir=tmp_path))
    try:
        assert app.cache is not None and app.engine.cache is app.cache
        assert app.cache.path == tmp_path / "result-cache.sqlite3"
    finally:
        app.close()


class ChangingUnit(Unit):
    """Guest memory that changes after the planner read it (a running guest)."""

    kind = "memory"
    chunkable = True

    def __init__(self, before: bytes, after: bytes) -> None:
        self.name, self.size, self.data, self.after, self.reads = "changing", len(before), before, after, 0

    @contextmanager
    def window(self, offset: int, length: int) -> Iterator[memoryview]:
        self.reads += 1
        with memoryview(self.data) as whole:
            yield whole[offset : offset + length]
        self.data = self.after  # every read after the first (the planner's) sees the new content


class OneUnit(Target):
    kind = "test"

    def __init__(self, unit: Unit) -> None:
        self.unit = unit

    def plan(self) -> Iterator[Unit | Skipped]:
        yield self.unit


def test_memory_that_changes_under_the_scan_is_not_cached(cache):
    before = (FILLER[:MiB] + bytes(range(1, 256)) * 4200)[: 2 * MiB]
    after = bytearray(before)
    after[MiB + 5 : MiB + 5 + len(MARKER)] = MARKER
    e = Engine(EngineSettings(threads=1, chunk_size=2 * MiB, overlap=4096), cache)
    try:
        changed = e.scan(RULES, OneUnit(ChangingUnit(before, bytes(after))))
        # the same planned content again: had the changed result been stored under the planned
        # digest, this clean memory would now report the marker
        clean = e.scan(RULES, OneUnit(ChangingUnit(before, before)))
    finally:
        e.close()
    assert [f.rule for f in changed.findings] == ["marker"]  # what was scanned is reported
    assert clean.kind is VerdictKind.CLEAN and clean.coverage.cache_hits == 0


def test_pure_python_fallback_gives_the_same_findings(tmp_path, monkeypatch):
    layout = ["f", "z", "r3", "r5", "z"]
    path = write_image(tmp_path / "m.raw", layout, {2 * MiB + 7: MARKER, 4 * MiB - 3: MARKER})
    results = []
    for impl in ("native", "python"):
        if impl == "python":
            monkeypatch.setattr(native, "_impl", native.PurePython)
        c = ResultCache(tmp_path / f"{impl}.sqlite3")
        _, cached = engines(c)
        try:
            results.append((scan(cached, path), scan(cached, path)))
        finally:
            cached.close()
            c.close()
    (native_cold, native_warm), (py_cold, py_warm) = results
    assert summary(native_cold) == summary(native_warm) == summary(py_cold) == summary(py_warm)
    assert py_warm.coverage.cache_misses == 0 and py_warm.coverage.cache_hits == native_warm.coverage.cache_hits


def test_unreadable_windows_are_not_cached_and_stay_incomplete(tmp_path, cache):
    path = write_image(tmp_path / "m.raw", ["f"] * 6, {})
    source = RawMemory(str(path))
    path.write_bytes(path.read_bytes()[: 3 * MiB])  # the dump shrinks under the scanner
    _, cached = engines(cache)
    try:
        with MemoryTarget(source) as target:
            first = cached.scan(RULES, target)
        assert len(cache) == 1  # only [0, 2 MiB) was read whole
        with MemoryTarget(RawMemory(str(path))) as target:
            whole = cached.scan(RULES, target)  # what is left, now a complete 3 MiB image
    finally:
        cached.close()
    assert first.kind is VerdictKind.INCOMPLETE
    assert {g.kind for g in first.coverage.gaps} == {GapKind.UNREADABLE}
    assert first.coverage.bytes_unreadable >= 2 * MiB
    assert whole.kind is VerdictKind.CLEAN and whole.coverage.complete
