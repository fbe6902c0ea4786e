"""Engine settings (from config): threads, chunking, and per-unit limits."""

from __future__ import annotations

import os
from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class EngineSettings:
    """How the engine scans.

    ``chunk_size``/``overlap``: chunkable units are scanned in windows of ``chunk_size`` plus
    ``overlap`` bytes; a string match up to ``overlap`` bytes long that starts in a window's own
    ``chunk_size`` part is reported by that window only, so a match across a boundary is found
    exactly once. ``unit_timeout`` bounds the wall time of one unit (all its windows);
    ``max_matches_per_string`` bounds instances kept from one string in one window (more makes
    the unit INCOMPLETE with TOO_MANY_MATCHES).
    """

    threads: int = max(1, os.cpu_count() or 1)
    chunk_size: int = 16 * MiB
    overlap: int = 64 * 1024
    unit_timeout: float = 600.0
    max_matches_per_string: int = 10_000
    max_strings_per_finding: int = 32
    max_findings_per_unit: int = 1_000
    max_gaps_kept: int = 1_000
    malicious_threshold: int = 75
    skip_zero_blocks: bool = True  # memory units: all-zero 1 MiB blocks are not given to YARA

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError("engine.threads must be at least 1")
        if self.chunk_size < 4096 or self.overlap < 0 or self.overlap >= self.chunk_size:
            raise ValueError("engine.chunk_size must be >= 4096 and greater than engine.overlap")
        if self.unit_timeout <= 0:
            raise ValueError("engine.unit_timeout must be positive")
