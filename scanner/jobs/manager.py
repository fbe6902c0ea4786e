"""Scan jobs: accept, queue, run, watch, cancel, and resume after a restart.

Contract:
- ``submit`` returns only after the job is committed to SQLite: an acknowledged scan is never
  lost. On ``start`` every job left QUEUED, RUNNING or INTERRUPTED is queued again and re-run
  from the beginning (``attempts`` counts the runs).
- A job scans with the ruleset active when it starts (or the one it pinned) and keeps it to the
  end, whatever is activated meanwhile.
- ``shutdown`` stops taking jobs, lets running ones finish within the grace period, and records
  the rest as INTERRUPTED so the next start re-runs them. It returns within the grace period
  plus one second, whatever the scans' threads do.
- Every scan runs on a daemon thread of its own (``scanner.jobs.threads``) under a watchdog
  (``JobLimits``): a cancel that its thread does not honour within ``cancel_grace`` abandons the
  thread (CANCELLED); a scan with no progress for ``stall_timeout`` is cancelled, then abandoned
  with an ERROR verdict. An abandoned thread that is still alive is *stuck* (``stuck()``):
  health goes NOT_SERVING while any is. A job started ``max_attempts`` times without finishing
  is not started again at the next start: DONE, ERROR verdict, reason given.
- Nothing here runs the engine or SQLite on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from scanner.engine import Engine, Progress, Ruleset, error_verdict
from scanner.errors import AlreadyExists, FailedPrecondition, InvalidArgument, ScannerError
from scanner.jobs.live import DONE, Event, LiveScan, LoopListener
from scanner.jobs.settings import JobLimits
from scanner.jobs.threads import call_bounded, start_thread
from scanner.outputs import ecs
from scanner.state.db import Database, ScanRecord
from scanner.targets import FilePolicy, TargetSpec, build_target
from scanner.verdicts import Coverage, Finding, Gap, GapKind, Verdict, VerdictKind

log = logging.getLogger(__name__)

FINAL_STATES = ("DONE", "CANCELLED")
WATCHDOG_TICK = 0.25  # seconds between the watchdog's looks at a running scan
SHUTDOWN_STOP = 1.0  # seconds an interrupted scan's thread gets to stop before it is abandoned
RulesetResolver = Callable[[str], Ruleset]
"""Returns the ruleset for a pinned digest, or the active one for ""; raises if there is none."""
FinishHook = Callable[[ScanRecord, str, Verdict | None], None]
"""Told (on the event loop, after the commit) that a scan ended: record, final state, verdict."""


class ScanManager:
    def __init__(
        self,
        db: Database,
        engine: Engine,
        resolve_ruleset: RulesetResolver,
        policy: FilePolicy,
        concurrency: int = 2,
        profile_cache: Path | None = None,
        limits: JobLimits | None = None,
    ) -> None:
        self.db = db
        self.engine = engine
        self.resolve_ruleset = resolve_ruleset
        self.policy = policy
        self.profile_cache = profile_cache
        self.concurrency = concurrency
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._live: dict[str, LiveScan] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._accepting = False
        self._running: set[str] = set()
        self.emit_events = False  # queue ECS documents for the event sinks with each final state
        self.on_finish: list[FinishHook] = []
        self.limits = limits or JobLimits()
        self._stuck: dict[str, threading.Thread] = {}  # abandoned scans whose thread has not returned

    async def start(self) -> int:
        """Re-queue unfinished jobs, start the workers; returns how many were resumed."""
        resumed = await asyncio.to_thread(self.db.resumable)
        for record in list(resumed):
            if record.attempts >= self.limits.max_attempts:
                await self._give_up(record)
                resumed.remove(record)
                continue
            await asyncio.to_thread(self.db.set_state, record.id, "QUEUED")
            self._enqueue(record.id)
        self._accepting = True
        self._workers = [asyncio.create_task(self._worker(), name=f"scan-worker-{i}") for i in range(self.concurrency)]
        if resumed:
            log.info("resumed %d unfinished scans", len(resumed))
        return len(resumed)

    async def submit(self, spec: TargetSpec, options: dict[str, Any], actor: str, request_id: str = "") -> ScanRecord:
        if not self._accepting:
            raise FailedPrecondition("the service is shutting down; not accepting scans")
        existing = await self._retried(request_id, spec, options)
        if existing is not None:
            return existing
        await call_bounded(lambda: self._check_target(spec), self.limits.open_timeout, "opening the target")
        pinned = str(options.get("ruleset_digest", ""))
        if pinned:
            await asyncio.to_thread(self.resolve_ruleset, pinned)  # NotFound now, not an ERROR later
        record, created = await asyncio.to_thread(self.db.create_scan, spec, options, actor, request_id)
        if created:
            self._enqueue(record.id)
            await asyncio.to_thread(self.db.audit, actor, "scan.start", record.id, spec.describe())
        return record

    async def _retried(self, request_id: str, spec: TargetSpec, options: dict[str, Any]) -> ScanRecord | None:
        """The scan already started under ``request_id`` (a retry gets it); another request under
        the same id is refused (AIP-155)."""
        if not request_id:
            return None
        existing = await asyncio.to_thread(self.db.find_request, request_id)
        if existing is None:
            return None
        same_target = existing.target.kind == spec.kind and _comparable(existing.target.params) == _comparable(
            spec.params
        )
        if not same_target or _comparable(existing.options) != _comparable(options):
            raise AlreadyExists(
                f"request_id {request_id!r} was used for a different request (scan {existing.id}); use a new request_id"
            )
        return existing

    async def _give_up(self, record: ScanRecord) -> None:
        """A job that was started ``attempts`` times and never finished is not started again."""
        reason = (
            f"not started again: it was started {record.attempts} times and never finished "
            "(it hung, or the service stopped or died during it each time)"
        )
        verdict = error_verdict(record.ruleset_digest, reason, time.time())
        await self._finish(record, "DONE", verdict)
        await asyncio.to_thread(self.db.audit, "system", "scan.give_up", record.id, reason)
        log.warning("scan %s: %s", record.id, reason)

    def stuck(self) -> list[str]:
        """Scans whose thread was abandoned and has still not returned."""
        for scan_id, thread in list(self._stuck.items()):
            if not thread.is_alive():
                del self._stuck[scan_id]
        return sorted(self._stuck)

    def _check_target(self, spec: TargetSpec) -> None:
        """Open the target once so a wrong request fails now, with the field named."""
        build_target(spec, self.policy, self.profile_cache).close()

    def _enqueue(self, scan_id: str) -> None:
        self._live[scan_id] = LiveScan(scan_id)
        self._queue.put_nowait(scan_id)

    async def get(self, scan_id: str) -> tuple[ScanRecord, Progress | None]:
        record = await asyncio.to_thread(self.db.get_scan, scan_id)
        live = self._live.get(scan_id)
        return record, live.progress if live else None

    async def cancel(self, scan_id: str, actor: str) -> ScanRecord:
        record = await asyncio.to_thread(self.db.get_scan, scan_id)
        if record.state in FINAL_STATES:
            raise FailedPrecondition(f"scan {scan_id} is already {record.state}")
        live = self._live.get(scan_id)
        if live:
            live.cancel_requested(self.limits.cancel_grace)
        if record.state == "QUEUED":
            await self._finish(record, "CANCELLED", None)
            self._finish_live(scan_id)
        await asyncio.to_thread(self.db.audit, actor, "scan.cancel", scan_id, "")
        return await asyncio.to_thread(self.db.get_scan, scan_id)

    async def watch(self, scan_id: str) -> AsyncIterator[Event]:
        """Progress and findings of a scan, then returns when it is final."""
        record = await asyncio.to_thread(self.db.get_scan, scan_id)
        live = self._live.get(scan_id)
        if live is None or record.state in FINAL_STATES:
            for finding in await asyncio.to_thread(self.db.findings, scan_id):
                yield finding
            return
        async for event in live.watch():
            yield event

    async def _worker(self) -> None:
        while True:
            scan_id = await self._queue.get()
            if not self._accepting:
                return
            live = self._live.get(scan_id)
            if live is None or live.cancel.is_set():
                continue
            self._running.add(scan_id)
            try:
                await self._run(live)
            except Exception:  # never lose the worker; the job is recorded as an error
                log.exception("scan %s failed", scan_id)
                verdict = error_verdict("", "internal error; see the service log", time.time())
                await self._finish(await asyncio.to_thread(self.db.get_scan, scan_id), "DONE", verdict)
            finally:
                self._running.discard(scan_id)
                self._finish_live(scan_id)

    async def _run(self, live: LiveScan) -> None:
        record = await asyncio.to_thread(self.db.get_scan, live.scan_id)
        started = time.time()
        try:
            ruleset = self.resolve_ruleset(str(record.options.get("ruleset_digest", "")))
        except ScannerError as e:
            await self._finish(record, "DONE", error_verdict("", e.message, started))
            return
        if not await asyncio.to_thread(self.db.mark_running, live.scan_id, ruleset.digest):
            return  # cancelled between the queue and the worker
        log.info(
            "scan %s started: %s (ruleset %s)",
            record.id,
            _printable(record.target.describe()),
            ruleset.digest,
            extra={
                "event.action": "scan-started",
                "avscan.scan.id": record.id,
                "avscan.scan.target_kind": record.target.kind,
            },
        )
        listener = LoopListener(asyncio.get_running_loop(), live)
        live.beat = time.monotonic()
        future, thread = start_thread(lambda: self._scan(record, ruleset, listener, live), f"scan-{live.scan_id}")
        timeout = float(record.options.get("unit_timeout_seconds") or 0) or self.engine.settings.unit_timeout
        verdict = await self._supervise(live, future, self.limits.stall_after(timeout))
        if verdict is None:  # abandoned: the thread is stuck; the job is recorded without it
            self._stuck[live.scan_id] = thread
            self.engine.retire_pool()  # its windows may hold the engine's threads
            verdict = error_verdict(ruleset.digest, live.abandon_reason, started)
        await asyncio.sleep(0)  # let queued events reach watchers before the final state
        state = "INTERRUPTED" if live.interrupted else "CANCELLED" if live.cancelled_by_caller else "DONE"
        if live.interrupted:
            await asyncio.to_thread(self.db.finish_scan, live.scan_id, state, None)
            return
        await self._finish(record, state, verdict, getattr(ruleset, "version", 0))

    async def _finish(self, record: ScanRecord, state: str, verdict: Verdict | None, version: int = 0) -> None:
        """Commit the final state with its event documents, then tell the hooks (log, metrics, relay)."""
        docs: list[dict[str, Any]] = []
        if self.emit_events:
            facts = ecs.ScanFacts(
                record.id,
                record.target.kind,
                _printable(record.target.describe()),
                version,
                ecs.Subject.of_scan(record.options, record.target.params),
                state,
                record.requested_by,
            )
            docs = await asyncio.to_thread(ecs.scan_documents, verdict or _cancelled_before_start(record), facts)
        await asyncio.to_thread(self.db.finish_scan, record.id, state, verdict, docs)
        kind = verdict.kind.value if verdict else state
        log.info(
            "scan %s %s: %s%s (%d findings)",
            record.id,
            state.lower(),
            kind,
            f" ({_printable(verdict.reason)})" if verdict and verdict.reason else "",
            len(verdict.findings) if verdict else 0,
            extra={
                "event.action": "scan-finished",
                "avscan.scan.id": record.id,
                "avscan.scan.verdict": kind,
                "avscan.scan.state": state,
            },
        )
        for hook in self.on_finish:
            try:
                hook(record, state, verdict)
            except Exception:  # a broken observer never loses a verdict
                log.exception("scan %s: finish hook failed", record.id)

    async def _supervise(self, live: LiveScan, future: asyncio.Future[Verdict], stall_after: float) -> Verdict | None:
        """The scan's verdict, or None once its thread is abandoned (see the module contract)."""
        while True:
            done, _ = await asyncio.wait({future}, timeout=WATCHDOG_TICK)
            if done:
                return future.result()
            now = time.monotonic()
            if not live.cancel.is_set() and now - live.beat > stall_after:
                live.stalled = f"stalled: no progress for {stall_after:g} s"
                log.warning("scan %s %s; cancelling it", live.scan_id, live.stalled)
                live.cancel_requested(self.limits.cancel_grace)
            if now > live.abandon_at:
                log.error("scan %s did not stop when asked; abandoning its thread", live.scan_id)
                return None

    def _scan(self, record: ScanRecord, ruleset: Ruleset, listener: LoopListener, live: LiveScan) -> Verdict:
        started = time.time()
        timeout = record.options.get("unit_timeout_seconds") or 0
        engine = self.engine
        try:
            target = build_target(record.target, self.policy, self.profile_cache)
        except ScannerError as e:
            return error_verdict(ruleset.digest, e.message, started)
        with target:
            return engine.scan(ruleset, target, listener, live.cancel, unit_timeout=float(timeout) if timeout else None)

    def _finish_live(self, scan_id: str) -> None:
        live = self._live.pop(scan_id, None)
        if live:
            live.publish(DONE)

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, give running scans ``grace`` seconds, then interrupt them; a scan whose
        thread does not stop within one more second is abandoned, recorded INTERRUPTED."""
        self._accepting = False
        deadline = time.monotonic() + grace
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for scan_id in list(self._running):
            live = self._live.get(scan_id)
            if live:
                live.interrupted = True
                live.cancel_requested(SHUTDOWN_STOP)
        stop_by = time.monotonic() + SHUTDOWN_STOP + 2 * WATCHDOG_TICK
        while self._running and time.monotonic() < stop_by:
            await asyncio.sleep(0.05)
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _cancelled_before_start(record: ScanRecord) -> Verdict:
    """What a scan cancelled while QUEUED reports in its end event: nothing scanned, INCOMPLETE."""
    now = time.time()
    gap = Gap(GapKind.CANCELLED, _printable(record.target.describe()), "cancelled before it started")
    return Verdict(VerdictKind.INCOMPLETE, "", Coverage(gaps=(gap,)), started_at=record.created_at, finished_at=now)


def _comparable(values: Mapping[str, Any]) -> str:
    """Values as stored (JSON), so a retry compares equal to what was recorded."""
    return json.dumps(dict(values), sort_keys=True, default=str)


def _printable(text: str) -> str:
    """Text safe for a log line: bytes that were not UTF-8 become ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def options_from(
    unit_timeout_seconds: int, ruleset_digest: str, subject_name: str = "", subject_id: str = ""
) -> dict[str, Any]:
    """Validated per-scan options as stored with the job."""
    if unit_timeout_seconds < 0 or unit_timeout_seconds > 86_400:
        raise InvalidArgument("options.unit_timeout_seconds", "must be between 0 and 86400")
    if ruleset_digest and not ruleset_digest.startswith("sha256:"):
        raise InvalidArgument("options.ruleset_digest", "must look like sha256:<hex>")
    for field_name, value, limit in (("name", subject_name, 255), ("id", subject_id, 128)):
        if len(value) > limit or any(ord(c) < 32 for c in value):
            raise InvalidArgument(f"options.subject.{field_name}", f"at most {limit} printable characters")
    options: dict[str, Any] = {"unit_timeout_seconds": unit_timeout_seconds, "ruleset_digest": ruleset_digest}
    if subject_name or subject_id:
        options["subject"] = {"name": subject_name, "id": subject_id}
    return options


__all__ = ["FINAL_STATES", "Finding", "ScanManager", "options_from"]
