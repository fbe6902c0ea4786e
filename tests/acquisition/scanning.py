"""Scan a memory source with the real engine and read back where EICAR was found."""

from __future__ import annotations

import contextlib

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


def read_every_range(source: MemorySource, limit: int = 1 << 16) -> None:
    """Read the start of every range: each read gives its full length or raises UnreadableError."""
    for r in source.ranges():
        n = min(r.length, limit)
        with contextlib.suppress(UnreadableError), source.window(r.start, n) as view:
            assert len(view) == n
    source.close()
