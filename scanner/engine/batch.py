"""Scanning a :class:`~scanner.targets.batch.BatchUnit`: one YARA call for the whole batch, then
one per member that something straddles, and findings per member (the contract is in
:mod:`scanner.targets.batch`).

The first call only finds candidates: its rule conditions are judged on the whole batch, and
every string instance of every matching rule is looked at (no per-finding bound), so an instance
that straddles a member's boundary is never lost to a bound meant for reporting. A candidate
member is then scanned alone with the engine's usual limits, and only the rules that match it
with a straddling instance are kept.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from scanner.engine.matcher import RuleHit, Ruleset, WindowResult, match_view
from scanner.engine.windows import Window
from scanner.errors import UnreadableError
from scanner.targets.batch import BatchUnit, Member
from scanner.verdicts import Finding, Gap, GapKind, StringMatch

UNBOUNDED = sys.maxsize


def scan_batch(
    ruleset: Ruleset, unit: BatchUnit, deadline: float, max_instances: int, max_per_string: int
) -> WindowResult:
    """The straddling hits of ``unit``'s members, in batch offsets; limits and unreadable bytes are gaps."""
    whole = Window(0, unit.size, unit.size)
    if deadline - time.monotonic() <= 0:
        return WindowResult([], [_gap(GapKind.TIMEOUT, unit, whole, "unit timeout reached")], 0)
    try:
        with unit.window(0, unit.size) as view:
            first = match_view(ruleset, unit, whole, view, deadline, UNBOUNDED, UNBOUNDED)
            hits: list[RuleHit] = []
            gaps = list(first.gaps)
            for member in _candidates(unit, first.hits):
                alone = Window(member.offset, member.size, member.offset + member.size)
                piece = view[member.offset : member.offset + member.size]
                again = match_view(ruleset, unit, alone, piece, deadline, max_instances, max_per_string)
                gaps.extend(again.gaps)
                hits.extend(h for h in again.hits if any(member.straddled(i.offset, i.length) for i in h.instances))
    except UnreadableError as e:
        return WindowResult([], [_gap(GapKind.UNREADABLE, unit, whole, e.reason)], 0)
    return WindowResult(hits, gaps, first.bytes_scanned)


def _candidates(unit: BatchUnit, hits: Iterable[RuleHit]) -> list[Member]:
    """Members in which some instance of a matching rule straddles the boundary, in batch order."""
    found: dict[int, Member] = {}
    for hit in hits:
        for inst in hit.instances:
            member = unit.member_at(inst.offset)
            if member is not None and member.offset not in found and member.straddled(inst.offset, inst.length):
                found[member.offset] = member
    return [found[k] for k in sorted(found)]


def batch_findings(unit: BatchUnit, hits: Iterable[RuleHit], max_strings: int) -> list[Finding]:
    """One finding per (member, rule): instances rebased to the member, attributed by the unit."""
    out: list[Finding] = []
    for hit in hits:
        per_member: dict[int, tuple[Member, list[StringMatch]]] = {}
        for inst in sorted(hit.instances, key=lambda i: (i.offset, i.identifier)):
            member = unit.member_at(inst.offset)
            if member is not None:
                per_member.setdefault(member.offset, (member, []))[1].append(inst)
        for member, instances in per_member.values():
            straddling = [i for i in instances if member.straddled(i.offset, i.length)]
            if not straddling:
                continue
            rebased = [_rebased(i, member) for i in instances]
            first = straddling[0].offset - member.offset
            offsets = [first] + [i.offset for i in rebased if i.offset != first]
            context = {**unit.context, **unit.member_attribute(member, offsets)}
            out.append(hit.finding(member.name, unit.kind, member.base, first, rebased, max_strings, context))
    out.sort(key=lambda f: (f.unit, f.offset, f.namespace, f.rule))
    return out


def _rebased(inst: StringMatch, member: Member) -> StringMatch:
    offset = inst.offset - member.offset
    return StringMatch(inst.identifier, offset, member.base + offset, inst.length, inst.data, inst.physical)


def _gap(kind: GapKind, unit: BatchUnit, window: Window, detail: str) -> Gap:
    return Gap(kind, unit.name, detail, unit.base + window.offset, window.own_end - window.offset)
