"""Scan jobs of a fleet: the :class:`ScanManager` contract with the queue in PostgreSQL.

Contract (on top of :mod:`scanner.jobs.manager`'s):
- ``submit`` routes the scan to a host (:meth:`Registry.host_for`) and commits it there; any
  appliance accepts any scan, and only the appliances of its host run it.
- A dispatcher claims scans of this host while a slot is free (``concurrency``), and otherwise
  sleeps until NOTIFY or ``poll_seconds``. A heartbeat task renews the appliance's registration
  and the leases of its running scans every third of ``lease_seconds``; a scan whose lease was
  taken over is cancelled here (its result would be fenced out anyway).
- ``cancel`` of a scan running on another appliance flags it in the database; that appliance
  stops it at its next renewal (within ``lease_seconds / 3``).
- ``watch`` of a scan queued or running elsewhere (another appliance, or not claimed yet) follows
  its state in the database every ``poll_seconds`` and yields its findings once it is final
  (live progress is only streamed by the appliance running it).
- ``start`` queues again what this appliance held before a restart; ``shutdown`` records
  interrupted scans as INTERRUPTED (claimable by the host's other appliances or the next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from scanner.engine import Engine, error_verdict
from scanner.errors import FailedPrecondition, ScannerError
from scanner.fleet.queue import JobQueue
from scanner.fleet.registry import Registry
from scanner.fleet.settings import FleetSettings
from scanner.jobs.live import Event, LiveScan
from scanner.jobs.manager import FINAL_STATES, RulesetResolver, ScanManager
from scanner.jobs.settings import JobLimits
from scanner.jobs.threads import call_bounded
from scanner.state.db import ScanRecord
from scanner.state.postgres import PostgresDatabase
from scanner.targets import FilePolicy, TargetSpec

log = logging.getLogger(__name__)


class FleetScanManager(ScanManager):
    def __init__(
        self,
        db: PostgresDatabase,
        engine: Engine,
        resolve_ruleset: RulesetResolver,
        policy: FilePolicy,
        concurrency: int = 2,
        profile_cache: Path | None = None,
        settings: FleetSettings | None = None,
        limits: JobLimits | None = None,
    ) -> None:
        super().__init__(db, engine, resolve_ruleset, policy, concurrency, profile_cache, limits)  # type: ignore[arg-type]
        self.pg = db
        self.settings = settings or FleetSettings()
        self.queue = JobQueue(db)
        self.registry = Registry(db, dead_after=3 * self.settings.lease_seconds)
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []

    async def start(self) -> int:
        """Register, queue again what this appliance held before, start claiming; returns that count."""
        recovered = await asyncio.to_thread(self.queue.recover)
        await asyncio.to_thread(self.registry.register)
        self._accepting = True
        self._background = [
            asyncio.create_task(self._dispatch(), name="fleet-dispatch"),
            asyncio.create_task(self._heartbeat(), name="fleet-heartbeat"),
        ]
        if recovered:
            log.info("queued again %d scans this appliance held before it restarted", recovered)
        return recovered

    async def submit(self, spec: TargetSpec, options: dict[str, Any], actor: str, request_id: str = "") -> ScanRecord:
        if not self._accepting:
            raise FailedPrecondition("the service is shutting down; not accepting scans")
        existing = await self._retried(request_id, spec, options)
        if existing is not None:
            return existing
        host = await asyncio.to_thread(self.registry.host_for, spec)
        if host == self.pg.host:  # another host's paths mean nothing here: its appliance checks them
            await call_bounded(lambda: self._check_target(spec), self.limits.open_timeout, "opening the target")
        pinned = str(options.get("ruleset_digest", ""))
        if pinned:
            await asyncio.to_thread(self.resolve_ruleset, pinned)
        record, created = await asyncio.to_thread(self.pg.create_scan, spec, options, actor, request_id, host)
        if created:
            await asyncio.to_thread(self.pg.audit, actor, "scan.start", record.id, f"{spec.describe()} on {host}")
        return record

    async def watch(self, scan_id: str) -> AsyncIterator[Event]:
        while scan_id not in self._live:
            record = await asyncio.to_thread(self.pg.get_scan, scan_id)
            if record.state in FINAL_STATES:
                break
            await asyncio.sleep(self.settings.poll_seconds)  # polls the shared state: no wake-up for others' scans
        async for event in super().watch(scan_id):
            yield event

    async def cancel(self, scan_id: str, actor: str) -> ScanRecord:
        """A scan running on another appliance is flagged; its holder stops it within a renewal."""
        record = await asyncio.to_thread(self.pg.get_scan, scan_id)
        if record.state != "RUNNING" or scan_id in self._live:
            return await super().cancel(scan_id, actor)
        await asyncio.to_thread(self.queue.request_cancel, scan_id)
        await asyncio.to_thread(self.pg.audit, actor, "scan.cancel", scan_id, "asked of the appliance running it")
        return await asyncio.to_thread(self.pg.get_scan, scan_id)

    async def _dispatch(self) -> None:
        while self._accepting:
            await self._slots.acquire()
            claimed = None
            try:
                if self._accepting:
                    claimed = await asyncio.to_thread(self.queue.claim_next, self.limits.max_attempts)
            except ScannerError as e:
                log.warning("claiming a scan: %s", e.message)
            if claimed is None:
                self._slots.release()
                if self._accepting:
                    await asyncio.to_thread(self.queue.wait, self.settings.poll_seconds)
                continue
            task = asyncio.create_task(self._run_claimed(*claimed), name=f"scan-{claimed[0].id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_claimed(self, record: ScanRecord, counted: bool) -> None:
        """Run a claimed scan; one the claim did not count was started ``max_attempts`` times
        already and never finished: it is given up (ERROR with the reason), not run again."""
        live = LiveScan(record.id)
        self._live[record.id] = live
        self._running.add(record.id)
        try:
            if not counted:
                await self._give_up(record)
            else:
                await self._run(live)
        except Exception:  # never lose the dispatcher; the job is recorded as an error
            log.exception("scan %s failed", record.id)
            verdict = error_verdict("", "internal error; see the service log", time.time())
            await self._finish(record, "DONE", verdict)
        finally:
            self._running.discard(record.id)
            self._finish_live(record.id)
            self._slots.release()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                running = set(self._running)
                held, cancelled = await asyncio.to_thread(self.queue.renew, running)
                await asyncio.to_thread(self.registry.heartbeat, len(running), self._active_digest())
            except ScannerError as e:
                log.warning("fleet heartbeat: %s", e.message)
                continue
            for scan_id in (running - held) | cancelled:
                live = self._live.get(scan_id)
                if live is not None and scan_id in self._running:
                    why = "cancelled on another appliance" if scan_id in cancelled else "lease taken over"
                    log.warning("scan %s: %s; stopping it here", scan_id, why)
                    live.cancel.set()

    def _active_digest(self) -> str:
        try:
            return self.resolve_ruleset("").digest
        except ScannerError:
            return ""

    async def shutdown(self, grace: float) -> None:
        await super().shutdown(grace)
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(ScannerError):
            await asyncio.to_thread(self.registry.deregister)
        self.queue.close()
