"""The verdict model used everywhere: findings, coverage and the verdict that combines them.

Contract:
- A verdict is CLEAN only when every byte of every unit was scanned (``coverage.complete``) and
  nothing matched. Any gap (unreadable range, timeout, too many matches, a unit skipped by
  policy, a cancelled scan) with no finding gives INCOMPLETE, with the reasons in ``coverage``.
- A finding always wins over a gap: anything found is MALICIOUS or SUSPICIOUS (by the rule's
  ``severity``/``score`` metadata against the threshold), and ``coverage.complete`` still tells
  whether the scan was whole.
- ERROR means the target could not be scanned at all (bad request, corrupt header, no ruleset).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MAX_MATCHED_DATA = 64
"""Matched strings are bounded: at most this many bytes of each matched instance are kept."""

DEFAULT_SEVERITY = 100
MALICIOUS_THRESHOLD = 75


class VerdictKind(enum.Enum):
    CLEAN = "CLEAN"
    MALICIOUS = "MALICIOUS"
    SUSPICIOUS = "SUSPICIOUS"
    INCOMPLETE = "INCOMPLETE"
    ERROR = "ERROR"


class GapKind(enum.Enum):
    """Why some bytes or units were not (fully) scanned."""

    UNREADABLE = "UNREADABLE"
    TIMEOUT = "TIMEOUT"
    TOO_MANY_MATCHES = "TOO_MANY_MATCHES"
    SKIPPED_POLICY = "SKIPPED_POLICY"
    SKIPPED_LIMIT = "SKIPPED_LIMIT"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Gap:
    """One reason coverage is not whole: which unit, how many bytes, and why."""

    kind: GapKind
    unit: str
    detail: str
    offset: int = 0
    length: int = 0


@dataclass(frozen=True)
class StringMatch:
    """One matched instance of a rule string: offset inside the unit and address in the target."""

    identifier: str
    offset: int
    address: int
    length: int
    data: bytes  # at most MAX_MATCHED_DATA bytes of the match
    physical: int | None = None  # guest physical address, when the unit knows it


@dataclass(frozen=True)
class Finding:
    """A rule that matched one unit (file, memory range, process region)."""

    rule: str
    namespace: str
    tags: tuple[str, ...]
    meta: Mapping[str, str | int | bool]
    unit: str
    unit_kind: str
    offset: int  # of the first matched string within the unit (0 if the rule has no strings)
    address: int  # the same, as an address in the target (physical/virtual address, file offset)
    strings: tuple[StringMatch, ...] = ()
    strings_truncated: bool = False
    context: Mapping[str, str] = field(default_factory=dict)  # e.g. sha256, pid, process, region

    @property
    def severity(self) -> int:
        return rule_severity(self.meta)


def rule_severity(meta: Mapping[str, str | int | bool]) -> int:
    """Severity 0-100 from a rule's ``severity`` or ``score`` metadata; 100 when absent."""
    for key in ("severity", "score"):
        value = meta.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return max(0, min(100, value))
        if isinstance(value, str) and value.strip().isdigit():
            return max(0, min(100, int(value.strip())))
    return DEFAULT_SEVERITY


@dataclass(frozen=True)
class Coverage:
    """How much of the target was really scanned, and every reason it was not all of it."""

    bytes_total: int = 0
    bytes_scanned: int = 0
    bytes_skipped: int = 0
    bytes_unreadable: int = 0
    bytes_zero: int = 0  # all-zero memory blocks: covered without running YARA on them
    units_total: int = 0
    units_scanned: int = 0
    units_skipped: int = 0
    units_failed: int = 0
    gaps: tuple[Gap, ...] = ()
    gaps_truncated: int = 0  # gaps beyond the bound kept in ``gaps``
    cache_hits: int = 0
    cache_misses: int = 0
    accounting: Mapping[str, int] = field(default_factory=dict)
    """What the data's own bookkeeping says exists against what was reached, e.g.
    ``p1.files_allocated`` / ``p1.files_reached`` (a filesystem's allocation tables against its
    directory walk) or ``processes.listed`` / ``processes.walked`` / ``processes.failed``. A
    difference that could not be scanned is also a gap; these counts let a reader check it."""

    @property
    def complete(self) -> bool:
        return not self.gaps and self.gaps_truncated == 0


@dataclass(frozen=True)
class Verdict:
    """The outcome of one scan: kind, findings, coverage, and the ruleset it was scanned with."""

    kind: VerdictKind
    ruleset_digest: str
    coverage: Coverage
    findings: tuple[Finding, ...] = ()
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    details: Mapping[str, str] = field(default_factory=dict)  # e.g. consistency mode, pause time

    @property
    def reason(self) -> str:
        """One line saying why the verdict is what it is."""
        if self.kind is VerdictKind.ERROR:
            return self.error
        if self.coverage.complete:
            return ""
        first = self.coverage.gaps[0] if self.coverage.gaps else None
        more = len(self.coverage.gaps) + self.coverage.gaps_truncated - 1
        text = f"{first.kind.value.lower()}: {first.unit}: {first.detail}" if first else "gaps"
        return text + (f" (+{more} more)" if more > 0 else "")


def decide(findings: Iterable[Finding], coverage: Coverage, threshold: int = MALICIOUS_THRESHOLD) -> VerdictKind:
    """The verdict kind for these findings and this coverage (see the module contract)."""
    severities = [f.severity for f in findings]
    if severities:
        return VerdictKind.MALICIOUS if max(severities) >= threshold else VerdictKind.SUSPICIOUS
    return VerdictKind.CLEAN if coverage.complete else VerdictKind.INCOMPLETE
