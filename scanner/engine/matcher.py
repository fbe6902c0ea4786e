"""One window through libyara: the only place that calls ``Rules.match``.

Runs on an engine worker thread. yara-python releases the GIL while libyara scans and takes the
window's ``memoryview`` directly, so no bytes are copied. Only matches owned by the window (see
:mod:`scanner.engine.windows`) are kept; matched data is bounded by ``MAX_MATCHED_DATA``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import yara  # type: ignore[import-not-found,unused-ignore]

from scanner.engine.windows import Window
from scanner.errors import UnreadableError
from scanner.targets.base import Unit
from scanner.verdicts import MAX_MATCHED_DATA, Finding, Gap, GapKind, StringMatch

yara.set_config(max_match_data=MAX_MATCHED_DATA)
console_log = logging.getLogger("scanner.rules.console")
MAX_CONSOLE_LINES = 20  # per window
MAX_CONSOLE_CHARS = 256


class Ruleset(Protocol):
    """What the engine needs of a loaded ruleset."""

    @property
    def digest(self) -> str: ...
    @property
    def rules(self) -> Any: ...
    @property
    def externals(self) -> Mapping[str, str]: ...


@dataclass
class RuleHit:
    """One rule matching in one window, with the string instances this window owns."""

    namespace: str
    rule: str
    tags: tuple[str, ...]
    meta: Mapping[str, str | int | bool]
    instances: list[StringMatch] = field(default_factory=list)
    truncated: bool = False

    def finding(
        self,
        unit: str,
        kind: str,
        base: int,
        offset: int,
        strings: Sequence[StringMatch],
        limit: int,
        context: Mapping[str, str],
    ) -> Finding:
        """This hit as the finding of ``unit`` (named, of ``kind``, at ``base``) at ``offset``,
        keeping the first ``limit`` of ``strings``."""
        return Finding(
            rule=self.rule,
            namespace=self.namespace,
            tags=self.tags,
            meta=self.meta,
            unit=unit,
            unit_kind=kind,
            offset=offset,
            address=base + offset,
            strings=tuple(strings[:limit]),
            strings_truncated=self.truncated or len(strings) > limit,
            context=context,
        )


@dataclass
class WindowResult:
    hits: list[RuleHit]
    gaps: list[Gap]
    bytes_scanned: int
    cache_hit: bool | None = None  # None: the result cache was not consulted


def scan_window(
    ruleset: Ruleset,
    unit: Unit,
    window: Window,
    deadline: float,
    max_instances: int,
    max_per_string: int,
) -> WindowResult:
    """Scan ``window`` of ``unit``; limits and unreadable bytes come back as gaps, never raised."""
    if deadline - time.monotonic() <= 0:
        return WindowResult([], [_gap(GapKind.TIMEOUT, unit, window, "unit timeout reached")], 0)
    try:
        with unit.window(window.offset, window.length) as view:
            return match_view(ruleset, unit, window, view, deadline, max_instances, max_per_string)
    except UnreadableError as e:
        return WindowResult([], [_gap(GapKind.UNREADABLE, unit, window, e.reason)], 0)


def used_externals(ruleset: Ruleset, unit: Unit) -> dict[str, str]:
    """The unit's external variables that the ruleset declares (they can change its results).

    Names are bytes: a value that is not valid UTF-8 (surrogate escapes inside, which libyara
    cannot take) is given with each such byte written ``\\xNN``; the unit is still scanned."""
    return {
        k: v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        for k, v in unit.externals.items()
        if k in ruleset.externals
    }


def match_view(
    ruleset: Ruleset,
    unit: Unit,
    window: Window,
    view: memoryview,
    deadline: float,
    max_instances: int,
    max_per_string: int,
) -> WindowResult:
    """Scan ``view``, the mapped bytes of ``window``; like :func:`scan_window` otherwise."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return WindowResult([], [_gap(GapKind.TIMEOUT, unit, window, "unit timeout reached")], 0)
    warnings: list[str] = []

    def on_warning(kind: int, message: object) -> int:
        if kind == yara.CALLBACK_TOO_MANY_MATCHES:
            warnings.append(str(message))
        return int(yara.CALLBACK_CONTINUE)

    console = _Console(unit.name)
    try:
        matches = ruleset.rules.match(
            data=view,
            timeout=max(1, math.ceil(remaining)),
            externals=used_externals(ruleset, unit),
            warnings_callback=on_warning,
            console_callback=console,
        )
    except yara.TimeoutError:
        return WindowResult([], [_gap(GapKind.TIMEOUT, unit, window, "yara scan timed out")], 0)
    except yara.Error as e:
        return WindowResult([], [_gap(GapKind.FAILED, unit, window, f"yara: {e}")], 0)
    finally:
        console.flush()
    hits, flooded = _owned_hits(matches, unit, window, max_instances, max_per_string)
    gaps = [_gap(GapKind.TOO_MANY_MATCHES, unit, window, w) for w in warnings + flooded]
    return WindowResult(hits, gaps, window.own_end - window.offset)


class _Console:
    """The ``console`` module's output for one window: the first ``MAX_CONSOLE_LINES`` lines go
    to the service log (each cut to ``MAX_CONSOLE_CHARS``), the rest are only counted. (libyara
    prints every call to stdout otherwise: a rule can log once per byte scanned.)"""

    def __init__(self, where: str) -> None:
        self.where = where
        self.count = 0

    def __call__(self, message: str) -> None:
        self.count += 1
        if self.count <= MAX_CONSOLE_LINES:
            console_log.info("%s: %s", self.where, message[:MAX_CONSOLE_CHARS])

    def flush(self) -> None:
        if self.count > MAX_CONSOLE_LINES:
            console_log.info("%s: %d more console lines dropped", self.where, self.count - MAX_CONSOLE_LINES)


def _owned_hits(
    matches: list[Any], unit: Unit, window: Window, max_instances: int, max_per_string: int
) -> tuple[list[RuleHit], list[str]]:
    """Hits with their instances; a rule whose instances all start past the window's own end is
    left to the next window, which sees them whole. Instances in the overlap are kept: a rule
    matched here may not match in the next window, and the engine removes duplicates."""
    hits: list[RuleHit] = []
    flooded: list[str] = []
    for m in matches:
        hit = RuleHit(m.namespace, m.rule, tuple(m.tags), dict(m.meta))
        has_strings = owned = False
        for s in m.strings:
            has_strings = has_strings or bool(s.instances)
            if len(s.instances) > max_per_string:
                flooded.append(f"{m.rule}:{s.identifier} matched {len(s.instances)} times")
            for inst in s.instances:
                offset = window.offset + inst.offset
                owned = owned or window.owns(offset)
                if len(hit.instances) >= max_instances:
                    hit.truncated = True
                    break
                data = bytes(inst.matched_data[:MAX_MATCHED_DATA])
                hit.instances.append(
                    StringMatch(
                        s.identifier, offset, unit.base + offset, inst.matched_length, data, unit.physical(offset)
                    )
                )
        if owned or not has_strings:
            hits.append(hit)
    return hits, flooded


def _gap(kind: GapKind, unit: Unit, window: Window, detail: str) -> Gap:
    """A gap over the window's own span (its overlap is accounted by the next window)."""
    return Gap(kind, unit.name, detail, unit.base + window.offset, window.own_end - window.offset)
