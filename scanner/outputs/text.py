"""clamscan-style text: one ``path: Rule FOUND`` line per finding, gaps, then a summary."""

from __future__ import annotations

from collections.abc import Iterable

from scanner.verdicts import Finding, Gap, Verdict


def finding_line(f: Finding) -> str:
    where = f.unit if f.unit_kind in ("file", "buffer") else f"{f.unit} @ {f.address:#x}"
    owner = f.context.get("pid")
    if owner and f.unit_kind == "memory":  # a physical hit attributed to its process(es)
        where += f" (pid {owner} {f.context.get('process', '')})"
    return escaped(f"{where}: {f.rule} FOUND")


def string_lines(f: Finding) -> Iterable[str]:
    """``yara -s`` style: each matched string, its address and its bytes (printable or hex)."""
    for s in f.strings:
        data = s.data.decode("latin-1")
        shown = data if data.isprintable() else s.data.hex(" ")
        more = "..." if s.length > len(s.data) else ""
        yield f"  {s.address:#x}:{s.identifier}: {shown}{more}"
    if f.strings_truncated:
        yield "  (more matches not kept)"


def gap_line(g: Gap) -> str:
    return escaped(f"{g.unit}: {g.detail} {g.kind.value}")


def escaped(line: str) -> str:
    """A line any terminal or log takes: bytes of a name that are not UTF-8 become ``\\xNN``."""
    return line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def summary(verdict: Verdict, rule_count: int, elapsed: float) -> Iterable[str]:
    c = verdict.coverage
    infected = len({f.unit for f in verdict.findings})
    yield ""
    yield "----------- SCAN SUMMARY -----------"
    yield f"Ruleset: {verdict.ruleset_digest} ({rule_count} rules)"
    yield f"Scanned units: {c.units_scanned}"
    yield f"Infected units: {infected}"
    yield f"Skipped units: {c.units_skipped}"
    yield f"Failed units: {c.units_failed}"
    yield f"Data scanned: {c.bytes_scanned / 1048576:.2f} MB"
    if c.bytes_zero:
        yield f"Zero memory skipped: {c.bytes_zero / 1048576:.2f} MB"
    if c.bytes_unreadable:
        yield f"Data unreadable: {c.bytes_unreadable / 1048576:.2f} MB"
    for key, count in sorted(c.accounting.items()):  # the data's own bookkeeping against what was reached
        yield f"Accounting {key}: {count}"
    yield escaped(f"Verdict: {verdict.kind.value}" + (f" ({verdict.reason})" if verdict.reason else ""))
    yield f"Time: {elapsed:.3f} sec"
