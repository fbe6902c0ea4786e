"""Verdicts and findings to and from JSON-safe dicts, for the SQLite record."""

from __future__ import annotations

import base64
from typing import Any

from scanner.verdicts import Coverage, Finding, Gap, GapKind, StringMatch, Verdict, VerdictKind


def finding_to_dict(f: Finding) -> dict[str, Any]:
    return {
        "rule": f.rule,
        "namespace": f.namespace,
        "tags": list(f.tags),
        "meta": dict(f.meta),
        "unit": f.unit,
        "unit_kind": f.unit_kind,
        "offset": f.offset,
        "address": f.address,
        "strings": [
            [s.identifier, s.offset, s.address, s.length, base64.b64encode(s.data).decode(), s.physical]
            for s in f.strings
        ],
        "strings_truncated": f.strings_truncated,
        "context": dict(f.context),
    }


def finding_from_dict(d: dict[str, Any]) -> Finding:
    strings = tuple(
        StringMatch(ident, off, addr, length, base64.b64decode(data), *rest[:1])
        for ident, off, addr, length, data, *rest in d["strings"]
    )
    return Finding(
        rule=d["rule"],
        namespace=d["namespace"],
        tags=tuple(d["tags"]),
        meta=d["meta"],
        unit=d["unit"],
        unit_kind=d["unit_kind"],
        offset=d["offset"],
        address=d["address"],
        strings=strings,
        strings_truncated=d["strings_truncated"],
        context=d["context"],
    )


def verdict_to_dict(v: Verdict) -> dict[str, Any]:
    """The verdict without its findings (those are stored one row each)."""
    c = v.coverage
    return {
        "kind": v.kind.value,
        "ruleset_digest": v.ruleset_digest,
        "error": v.error,
        "started_at": v.started_at,
        "finished_at": v.finished_at,
        "details": dict(v.details),
        "findings_count": len(v.findings),
        "coverage": coverage_to_dict(c),
    }


def coverage_to_dict(c: Coverage) -> dict[str, Any]:
    return {
        "bytes_total": c.bytes_total,
        "bytes_scanned": c.bytes_scanned,
        "bytes_skipped": c.bytes_skipped,
        "bytes_unreadable": c.bytes_unreadable,
        "bytes_zero": c.bytes_zero,
        "units_total": c.units_total,
        "units_scanned": c.units_scanned,
        "units_skipped": c.units_skipped,
        "units_failed": c.units_failed,
        "gaps": [[g.kind.value, g.unit, g.detail, g.offset, g.length] for g in c.gaps],
        "gaps_truncated": c.gaps_truncated,
        "cache_hits": c.cache_hits,
        "cache_misses": c.cache_misses,
        "accounting": dict(c.accounting),
    }


def coverage_from_dict(d: dict[str, Any]) -> Coverage:
    c = dict(d)
    gaps = tuple(Gap(GapKind(k), unit, detail, off, length) for k, unit, detail, off, length in c.pop("gaps"))
    accounting = {str(k): int(v) for k, v in c.pop("accounting", {}).items()}  # absent in older records
    return Coverage(gaps=gaps, accounting=accounting, **c)


def verdict_from_dict(d: dict[str, Any], findings: tuple[Finding, ...] = ()) -> Verdict:
    return Verdict(
        kind=VerdictKind(d["kind"]),
        ruleset_digest=d["ruleset_digest"],
        coverage=coverage_from_dict(d["coverage"]),
        findings=findings,
        error=d["error"],
        started_at=d["started_at"],
        finished_at=d["finished_at"],
        details=d["details"],
    )
