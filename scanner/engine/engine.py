"""The scan engine: units in, one verdict out.

The engine owns the invariants every target relies on: windows with overlap, the per-unit
timeout, parallel scanning on a shared thread pool, coverage accounting and the verdict rule
(``scanner.verdicts``). It never runs on the event loop: callers hand it to a thread.

Contract:
- Every byte a target offered is accounted for exactly once: scanned, unreadable, or skipped
  (timeout, cancel, policy), and every gap carries its reason.
- Findings are merged per (unit, rule): one finding however many windows matched it, with the
  string instances in address order (bounded).
- ``cancel`` stops new windows from starting; windows in flight finish; the rest become
  CANCELLED gaps, so a cancelled scan is INCOMPLETE, never CLEAN.
- At most ``threads`` windows are mapped at once (``2 * threads`` queued), whatever the
  target size, so memory stays bounded.
- Chunkable units are cut into windows at content-stable places: all-zero 1 MiB blocks skipped
  (``sparse``), the rest cut at multiples of ``chunk_size`` (``windows.aligned_windows``).
- With a result cache (``scanner.engine.cache``) every window and whole unit is looked up by its
  content first (by its identity, when the unit has one, without reading it); findings are the
  same as without the cache, and the verdict's coverage counts ``cache_hits``/``cache_misses``
  (windows and whole units looked up). A target with an identity whose complete result is cached
  is not planned at all: its result is given back, every unit counted as a hit.
- A batch unit (``scanner.targets.batch``: many small members, e.g. page seams) is scanned in one
  YARA call plus one per member a match straddles, never through the result cache, and gives one
  finding per (member, rule) (``scanner.engine.batch``).
- A target that cannot be read at all (``SourceError``, ``Unavailable`` from ``plan`` or
  ``identity``) gives an ERROR verdict with the one-line reason, never an exception, so the CLI
  and the API report it the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from scanner.engine.batch import batch_findings, scan_batch
from scanner.engine.blockmap import BlockMap, build_block_map
from scanner.engine.cache import (
    Planned,
    ResultCache,
    loaded_target,
    lookup_known,
    lookup_planned,
    lookup_small,
    scan_window_cached,
    stored_target,
    target_key,
)
from scanner.engine.matcher import RuleHit, Ruleset, WindowResult, scan_window
from scanner.engine.settings import EngineSettings
from scanner.engine.sparse import BLOCK
from scanner.engine.windows import Window, aligned_windows, plan_windows
from scanner.errors import SourceError, Unavailable
from scanner.targets.base import Skipped, Target, Unit
from scanner.targets.batch import BatchUnit
from scanner.verdicts import Coverage, Finding, Gap, GapKind, Verdict, VerdictKind, decide

T = TypeVar("T")
TIMED_OUT = "unit timeout reached"
_Pending = tuple["_UnitState", Window, Callable[[], WindowResult]]
INLINE_LOOKUP = 4 * 1024 * 1024  # windows up to this size are hashed and looked up on the planner thread


@dataclass(frozen=True)
class Progress:
    """Where a scan is: bytes and units done of the totals, findings so far."""

    bytes_done: int
    bytes_total: int
    units_done: int
    units_total: int
    findings: int


class ScanListener:
    """Receives progress and findings as they happen (from the engine's thread)."""

    def on_progress(self, progress: Progress) -> None:
        """Called after each unit (and after skipped items) completes."""

    def on_finding(self, finding: Finding) -> None:
        """Called once per finding, as soon as its unit is done."""

    def on_beat(self) -> None:
        """Called whenever the scan moves on (a window merged, a piece of a zero pass started),
        from the engine's threads, so a watchdog can tell a slow scan from a stuck one. Cheap."""


@dataclass
class _UnitState:
    unit: Unit
    index: int
    windows_left: int
    deadline: float = 0.0
    hits: dict[tuple[str, str], RuleHit] = field(default_factory=dict)
    gaps: list[Gap] = field(default_factory=list)
    scanned: int = 0
    blocks: BlockMap | None = None


class _Tally:
    """Coverage counters for one scan."""

    def __init__(self, max_gaps: int) -> None:
        self.max_gaps = max_gaps
        self.bytes_total = self.bytes_scanned = self.bytes_unreadable = self.bytes_zero = 0
        self.units_total = self.units_scanned = self.units_skipped = self.units_failed = 0
        self.gaps: list[Gap] = []
        self.gaps_dropped = 0
        self.cache_hits = self.cache_misses = 0
        self.bytes_done = 0
        self.units_done = 0

    def add_gap(self, gap: Gap) -> None:
        if gap.kind is GapKind.UNREADABLE:
            self.bytes_unreadable += gap.length
        if len(self.gaps) < self.max_gaps:
            self.gaps.append(gap)
        else:
            self.gaps_dropped += 1

    def load(self, c: Coverage) -> None:
        """Counts of a complete earlier result given back whole: every unit a cache hit."""
        self.bytes_total, self.bytes_scanned, self.bytes_zero = c.bytes_total, c.bytes_scanned, c.bytes_zero
        self.units_total, self.units_scanned, self.units_skipped = c.units_total, c.units_scanned, c.units_skipped
        self.units_done, self.bytes_done = c.units_total, c.bytes_total
        self.cache_hits = c.units_total

    def coverage(self) -> Coverage:
        skipped = max(0, self.bytes_total - self.bytes_scanned - self.bytes_zero - self.bytes_unreadable)
        return Coverage(
            bytes_total=self.bytes_total,
            bytes_scanned=self.bytes_scanned,
            bytes_skipped=skipped,
            bytes_unreadable=self.bytes_unreadable,
            bytes_zero=self.bytes_zero,
            units_total=self.units_total,
            units_scanned=self.units_scanned,
            units_skipped=self.units_skipped,
            units_failed=self.units_failed,
            gaps=tuple(self.gaps),
            gaps_truncated=self.gaps_dropped,
            cache_hits=self.cache_hits,
            cache_misses=self.cache_misses,
        )


class Engine:
    """Scans targets with a ruleset on a pool of ``settings.threads`` worker threads.

    ``cache``: the appliance's shared result cache (owned by the caller, not closed here).
    """

    def __init__(self, settings: EngineSettings | None = None, cache: ResultCache | None = None) -> None:
        self.settings = settings or EngineSettings()
        self.cache = cache
        self._pool = ThreadPoolExecutor(self.settings.threads, thread_name_prefix="yara")
        self._pool_lock = threading.Lock()

    def close(self, wait: bool = True) -> None:
        """Stop the pool; ``wait`` False when a window may be stuck in a read (it is left behind)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def retire_pool(self) -> None:
        """Give later work a fresh pool: the current one may hold threads stuck in reads (of a
        scan that was abandoned). Work queued on the old pool and not started is cancelled; the
        scans that queued it submit it again (``_Run._drain``). Stuck threads are left to end."""
        with self._pool_lock:
            old, self._pool = self._pool, ThreadPoolExecutor(self.settings.threads, thread_name_prefix="yara")
        old.shutdown(wait=False, cancel_futures=True)

    def scan(
        self,
        ruleset: Ruleset,
        target: Target,
        listener: ScanListener | None = None,
        cancel: threading.Event | None = None,
        unit_timeout: float | None = None,
    ) -> Verdict:
        """Scan every unit of ``target``; returns the verdict (see the module contract).

        ``unit_timeout`` overrides the configured per-unit time limit for this scan.
        """
        started = time.time()
        settings = self.settings if unit_timeout is None else replace(self.settings, unit_timeout=unit_timeout)
        run = _Run(self, settings, ruleset, listener or ScanListener(), cancel or threading.Event())
        try:
            run.execute(target)
        except (SourceError, Unavailable) as e:  # the target cannot be read at all: a verdict, not a crash
            return replace(error_verdict(ruleset.digest, e.message, started), details=target.details())
        finally:
            target.finish()
            if self.cache is not None:
                self.cache.flush()
        findings = tuple(run.findings)
        coverage = replace(run.tally.coverage(), accounting={**run.accounting, **target.accounting()})
        kind = decide(findings, coverage, self.settings.malicious_threshold)
        return Verdict(
            kind=kind,
            ruleset_digest=ruleset.digest,
            coverage=coverage,
            findings=findings,
            started_at=started,
            finished_at=time.time(),
            details={**run.details, **target.details()},
        )

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        with self._pool_lock:
            return self._pool.submit(fn)


def error_verdict(ruleset_digest: str, message: str, started: float) -> Verdict:
    """The verdict for a target that could not be scanned at all."""
    return Verdict(
        VerdictKind.ERROR,
        ruleset_digest,
        Coverage(),
        error=message,
        started_at=started,
        finished_at=time.time(),
    )


class _Run:
    """One scan in progress: schedules windows, merges results, reports progress."""

    def __init__(
        self,
        engine: Engine,
        settings: EngineSettings,
        ruleset: Ruleset,
        listener: ScanListener,
        cancel: threading.Event,
    ) -> None:
        self.engine = engine
        self.s = settings
        self.ruleset = ruleset
        self.listener = listener
        self.cancel = cancel
        self.tally = _Tally(self.s.max_gaps_kept)
        self.findings: list[Finding] = []
        self.details: dict[str, str] = {}  # from a replayed result: the details it was stored with
        self.accounting: dict[str, int] = {}  # from a replayed result: its accounting

    def execute(self, target: Target) -> None:
        cache = self.engine.cache
        identity = target.identity() if cache is not None else None
        key = target_key(identity, self.ruleset, self.s) if identity is not None else None
        if cache is not None and key is not None:
            earlier = cache.get(key)
            if earlier is not None and self._replay(earlier):
                return
        self._scan(target)
        if cache is not None and key is not None and self._complete() and target.identity() == identity:
            coverage = replace(self.tally.coverage(), accounting=dict(target.accounting()))
            cache.put(key, stored_target(coverage, self.findings, target.details()))

    def _complete(self) -> bool:
        return not self.cancel.is_set() and self.tally.coverage().complete and self.tally.units_failed == 0

    def _replay(self, value: list[Any]) -> bool:
        """Give back a complete earlier result of the same unchanged target (see ``Target.identity``)."""
        try:
            coverage, findings, details = loaded_target(value)
        except (KeyError, TypeError, ValueError):
            return False
        self.tally.load(coverage)
        self.accounting = dict(coverage.accounting)
        self.details = {**details, "cache.reused": "whole target: unchanged since an earlier complete scan"}
        for finding in findings:
            self.findings.append(finding)
            self.listener.on_finding(finding)
        self._progress()
        return True

    def _scan(self, target: Target) -> None:
        units = self._take_plan(target.plan())
        deferred = _Deferred(target)  # planned on its own thread while these units are scanned
        pending: dict[Future[WindowResult], _Pending] = {}
        try:
            self._submit(units, pending)
            more = deferred.result()
        finally:
            deferred.join()  # never left reading a source the caller is about to close
        self._submit(self._take_plan(more), pending, start=len(units))
        while pending:
            self._drain(pending, FIRST_COMPLETED)

    def _take_plan(self, items: Iterable[Unit | Skipped]) -> list[Unit]:
        units: list[Unit] = []
        for item in items:
            self.listener.on_beat()
            if isinstance(item, Skipped):
                self._skip(item)
            else:
                units.append(item)
                self.tally.bytes_total += item.size
                self.tally.units_total += 1
        self._progress()
        return units

    def _submit(self, units: list[Unit], pending: dict[Future[WindowResult], _Pending], start: int = 0) -> None:
        for state, window in self._windows(units, start):
            if self.cancel.is_set():
                self._cancelled(state, window)
                continue
            while len(pending) >= 2 * self.s.threads:
                self._drain(pending, FIRST_COMPLETED)
            planned = self._lookup(state, window)
            if isinstance(planned, WindowResult):
                self._merge(state, planned)
                continue
            if state.deadline <= time.monotonic():  # past the deadline: no thread, no read
                self._merge(state, WindowResult([], [_window_gap(GapKind.TIMEOUT, state, window, TIMED_OUT)], 0))
                continue
            task = self._task(state, window, planned)
            pending[self.engine.submit(task)] = (state, window, task)

    def _windows(self, units: list[Unit], start: int = 0) -> Iterator[tuple[_UnitState, Window]]:
        for index, unit in enumerate(units, start):
            # the unit's time starts with its planning: the zero/digest pass counts against it
            state = _UnitState(unit, index, 0, time.monotonic() + self.s.unit_timeout)
            windows = self._unit_windows(state)
            state.windows_left = len(windows)
            if not windows:
                self._unit_done(state)
            for window in windows:
                yield state, window

    def _unit_windows(self, state: _UnitState) -> list[Window]:
        s, unit, cache = self.s, state.unit, self.engine.cache
        if not unit.chunkable:
            return list(plan_windows(unit.size, s.chunk_size, s.overlap, chunkable=False))
        skip = s.skip_zero_blocks and s.overlap <= BLOCK // 2
        zero = bytes(-(-unit.size // BLOCK))
        if skip or cache is not None:
            seed = cache.seed if cache is not None else 0

            def stop() -> bool:
                self.listener.on_beat()
                return self.cancel.is_set() or time.monotonic() >= state.deadline

            blocks = build_block_map(unit, BLOCK, s.overlap, seed, self.engine.submit, stop, digests=cache is not None)
            state.blocks = blocks if cache is not None else None
            zero = blocks.zero if skip else zero
        windows = aligned_windows(unit.size, s.chunk_size, s.overlap, zero, BLOCK)
        self.tally.bytes_zero += unit.size - sum(w.own_end - w.offset for w in windows)
        return windows

    def _lookup(self, state: _UnitState, window: Window) -> WindowResult | Planned | None:
        """A cached result for ``window`` found from its block digests alone (no read, no thread)."""
        cache, s = self.engine.cache, self.s
        if cache is None or isinstance(state.unit, BatchUnit):  # a batch's results depend on its layout
            return None
        args = (s.max_strings_per_finding, s.max_matches_per_string)
        if state.blocks is not None:
            return lookup_planned(cache, self.ruleset, state.unit, window, state.blocks, *args)
        known = lookup_known(cache, self.ruleset, state.unit, window, *args)
        if known is not None:
            return known
        if window.length <= INLINE_LOOKUP:
            return lookup_small(cache, self.ruleset, state.unit, window, *args)
        return None

    def _task(self, state: _UnitState, window: Window, planned: Planned | None) -> Callable[[], WindowResult]:
        s = self.s
        cache = self.engine.cache

        def run() -> WindowResult:
            if isinstance(state.unit, BatchUnit):
                return scan_batch(
                    self.ruleset, state.unit, state.deadline, s.max_strings_per_finding, s.max_matches_per_string
                )
            if cache is not None:
                return scan_window_cached(
                    cache,
                    self.ruleset,
                    state.unit,
                    window,
                    state.deadline,
                    s.max_strings_per_finding,
                    s.max_matches_per_string,
                    planned,
                )
            return scan_window(
                self.ruleset,
                state.unit,
                window,
                state.deadline,
                s.max_strings_per_finding,
                s.max_matches_per_string,
            )

        return run

    def _drain(self, pending: dict[Future[WindowResult], _Pending], when: str) -> None:
        done, _ = wait(list(pending), return_when=when)
        for future in done:
            state, window, task = pending.pop(future)
            if future.cancelled():  # its pool was retired before it started: run it on the new one
                pending[self.engine.submit(task)] = (state, window, task)
                continue
            try:
                result = future.result()
            except Exception as e:  # a bug or a backend fault: account it, keep scanning
                unit = state.unit
                gap = Gap(
                    GapKind.FAILED,
                    unit.name,
                    repr(e),
                    unit.base + window.offset,
                    window.own_end - window.offset,
                )
                result = WindowResult([], [gap], 0)
            self._merge(state, result)

    def _merge(self, state: _UnitState, result: WindowResult) -> None:
        self.listener.on_beat()
        state.scanned += result.bytes_scanned
        if result.cache_hit is not None:
            self.tally.cache_hits += int(result.cache_hit)
            self.tally.cache_misses += int(not result.cache_hit)
        state.gaps.extend(result.gaps)
        if result.hits and not state.hits:
            state.unit.matched()  # e.g. attribution starts opening the guest's kernel while the scan runs on
        for hit in result.hits:
            key = (hit.namespace, hit.rule)
            have = state.hits.get(key)
            if have is None:
                state.hits[key] = hit
            else:
                seen = {(i.identifier, i.offset) for i in have.instances}
                have.instances.extend(i for i in hit.instances if (i.identifier, i.offset) not in seen)
                have.truncated = have.truncated or hit.truncated
        state.windows_left -= 1
        if state.windows_left == 0:
            self._unit_done(state)

    def _cancelled(self, state: _UnitState, window: Window) -> None:
        self._merge(state, WindowResult([], [_window_gap(GapKind.CANCELLED, state, window, "scan cancelled")], 0))

    def _unit_done(self, state: _UnitState) -> None:
        t = self.tally
        findings = self._findings(state)
        t.bytes_scanned += state.scanned
        for gap in state.gaps:
            t.add_gap(gap)
        failed = any(g.kind is not GapKind.TOO_MANY_MATCHES for g in state.gaps)
        t.units_failed += int(failed)
        t.units_scanned += int(not failed)
        t.units_done += 1
        t.bytes_done += state.unit.size
        for finding in findings:
            self.findings.append(finding)
            self.listener.on_finding(finding)
        self._progress()

    def _findings(self, state: _UnitState) -> list[Finding]:
        unit = state.unit
        if isinstance(unit, BatchUnit):  # one finding per member (scanner.targets.batch)
            out = batch_findings(unit, state.hits.values(), self.s.max_strings_per_finding)
        else:
            out = self._unit_findings(state)
            out.sort(key=lambda f: (f.offset, f.namespace, f.rule))
        if len(out) > self.s.max_findings_per_unit:
            detail = f"{len(out)} rules matched; kept {self.s.max_findings_per_unit}"
            state.gaps.append(Gap(GapKind.TOO_MANY_MATCHES, unit.name, detail, unit.base, 0))
        return out[: self.s.max_findings_per_unit]

    def _unit_findings(self, state: _UnitState) -> list[Finding]:
        unit = state.unit
        out: list[Finding] = []
        context = dict(unit.finding_context()) if state.hits else {}
        for hit in state.hits.values():
            instances = sorted(hit.instances, key=lambda i: (i.offset, i.identifier))
            limit = self.s.max_strings_per_finding
            offset = instances[0].offset if instances else 0
            attributed = {**context, **unit.attribute([i.offset for i in instances] or [offset])}
            out.append(hit.finding(unit.name, unit.kind, unit.base, offset, instances, limit, attributed))
        return out

    def _skip(self, item: Skipped) -> None:
        t = self.tally
        t.bytes_total += item.size
        t.units_total += 1
        t.units_skipped += 1
        t.units_done += 1
        t.bytes_done += item.size
        if item.gap:
            t.add_gap(Gap(item.kind, item.name, item.detail, 0, item.size))

    def _progress(self) -> None:
        t = self.tally
        self.listener.on_progress(
            Progress(t.bytes_done, t.bytes_total, t.units_done, t.units_total, len(self.findings))
        )


def _window_gap(kind: GapKind, state: _UnitState, window: Window, detail: str) -> Gap:
    """A gap over the window's own span (its overlap belongs to the next window)."""
    unit = state.unit
    return Gap(kind, unit.name, detail, unit.base + window.offset, window.own_end - window.offset)


class _Deferred:
    """``target.deferred_plan()`` drained on a thread of its own, started at once; :meth:`result`
    waits for it and gives its items, or raises what planning raised (as ``plan()`` would have)."""

    def __init__(self, target: Target) -> None:
        self._items: list[Unit | Skipped] = []
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if type(target).deferred_plan is not Target.deferred_plan:  # no thread for targets without one
            self._thread = threading.Thread(target=self._run, args=(target,), name="deferred-plan", daemon=True)
            self._thread.start()

    def _run(self, target: Target) -> None:
        try:
            self._items = list(target.deferred_plan())
        except BaseException as e:  # handed to the scanning thread by result()
            self._error = e

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def result(self) -> list[Unit | Skipped]:
        self.join()
        if self._error is not None:
            raise self._error
        return self._items
