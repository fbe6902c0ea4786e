"""Scan a memory source with the real engine and read back where EICAR was found."""

from __future__ import annotations

from scanner.acquisition.memory import MemorySource
from scanner.engine import Engine, EngineSettings
from scanner.errors import UnreadableError
from scanner.rulesets import LoadedRuleset
from scanner.targets.memory import MemoryTarget
from scanner.verdicts import Verdict

SETTINGS = EngineSettings(threads=2, chunk_size=1 << 20, overlap=4096, max_strings_per_finding=100_000)


def scan(source: MemorySource, rules: LoadedRuleset, settings: EngineSettings = SETTINGS) -> Verdict:
    engine = Engine(settings)
    try:
        return engine.scan(rules, MemoryTarget(source))
    finally:
        engine.close()


def eicar_addresses(verdict: Verdict) -> set[int]:
    """Physical addresses where EICAR_Test_File matched: its ``$head`` instances.

    (A finding keeps only the string instances that start in a window's own part, so ``$name`` or
    ``$tail`` of a match across a window boundary may be missing from it: read the bytes back.)
    """
    return {
        s.address for f in verdict.findings if f.rule == "EICAR_Test_File" for s in f.strings if s.identifier == "$head"
    }


def read_every_range(source: MemorySource, backing: bytes, limit: int = 1 << 16) -> dict[int, bytes]:
    """Read the start of every range; return {start: bytes} of those that read.

    A read gives its full length or raises UnreadableError, and what it gives is a piece of
    ``backing`` (the file the data lives in): a corrupted header may make a range unreadable,
    never make a reader invent bytes or hand back memory from somewhere else.
    """
    got: dict[int, bytes] = {}
    try:
        for r in source.ranges():
            n = min(r.length, limit)
            try:
                with source.window(r.start, n) as view:
                    data = bytes(view)
            except UnreadableError:
                continue
            assert len(data) == n, (r, len(data))
            assert data in backing, f"range {r} read {n} bytes that are nowhere in the file"
            got[r.start] = data
    finally:
        source.close()
    return got
