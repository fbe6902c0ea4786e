"""vCenter in the loop: triggers -> snapshot -> download -> scan -> verdict -> outbox -> vCenter.

Contract:
- A trigger becomes a durable job (``vc_jobs``) in the same transaction that moves the event
  cursor; a burst for one VM (a job still in flight, or one started within ``dedupe_seconds``)
  coalesces into that job.
- Jobs run under a global limit (``max_concurrent``) and a per-ESXi-host limit
  (``per_host_limit``): a storm of power-ons queues instead of snapshotting a whole host at once.
- The acquisition snapshot is removed right after the download, and again (idempotently, by
  name) in ``finally`` and when an interrupted job resumes: on success, failure, cancellation,
  restart, or a VM deleted meanwhile.
- Scans go through ``ScanManager.submit`` with request ids derived from the job id, so a resumed
  job gets the same scan instead of a second one. The verdict is the scans' own; a failed
  acquisition is ERROR with the reason, never CLEAN.
- Verdict attributes, the event and the quarantine steps are outbox rows written with the job's
  outcome in one transaction; the relay applies them in order per VM, retrying with backoff
  until vCenter confirms. A VM deleted meanwhile makes them ABANDONED (with the reason), not lost.
  Outages (no answer, connection lost, a busy VM) are retried without limit; an action vCenter
  itself refuses (a failed task, a fault) is tried ``max_attempts`` times, then FAILED with
  vCenter's error, logged at ERROR and audited (``vcenter.action_failed``): the operator must act.
- ``dry_run``: the quarantine steps are recorded DRY_RUN (what each would do) and never applied;
  the verdict attributes and the event are still written (they change nothing in the VM).
- ``auto_release``: a CLEAN job that scanned the VM's memory releases an earlier quarantine;
  INCOMPLETE, ERROR or a job without a memory scan never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from scanner.errors import ScannerError
from scanner.fleet.leadership import VCENTER_WATCHER, Leadership
from scanner.fleet.settings import FleetSettings
from scanner.jobs.manager import FINAL_STATES, ScanManager
from scanner.outputs import ecs
from scanner.outputs.queue import EventQueue
from scanner.state.db import Database
from scanner.state.postgres import PostgresDatabase
from scanner.targets import REGISTRY, TargetSpec
from scanner.vcenter import acquisition
from scanner.vcenter.actions import APPLY, FORENSIC_PREFIX, REVERSIBLE, ActionContext, ensure_fields
from scanner.vcenter.connection import Connection, VCenterError
from scanner.vcenter.inventory import VmInfo, list_vms, vm_info
from scanner.vcenter.pgstore import PostgresVCenterStore
from scanner.vcenter.settings import VCenterSettings
from scanner.vcenter.store import Action, Job, NewAction, VCenterStore
from scanner.vcenter.tags import Tagging
from scanner.vcenter.triggers import Trigger, Watcher
from scanner.verdicts import VerdictKind

log = logging.getLogger(__name__)
ACTOR = "vcenter"
MAX_BACKOFF = 60.0
RETENTION_CHECK_SECONDS = 3600.0
QUARANTINE_STEPS = tuple(REVERSIBLE)  # the steps a release undoes (a forensic snapshot is kept)
SEVERITY_ORDER = {"MALICIOUS": 5, "SUSPICIOUS": 4, "ERROR": 3, "INCOMPLETE": 2, "CLEAN": 1, "": 0}


class VCenterService:
    def __init__(
        self,
        settings: VCenterSettings,
        scans: ScanManager,
        db: Database,
        state_dir: Path,
        fleet: FleetSettings | None = None,
    ) -> None:
        self.settings = settings
        self.policy = settings.policy
        self.scans = scans
        self.db = db
        self.conn = Connection(settings)
        self.store: VCenterStore
        self.fleet: PostgresVCenterStore | None = None  # the fleet's shared store, with a PostgreSQL state
        self._leads: dict[str, Leadership] = {}
        if isinstance(db, PostgresDatabase):
            fleet = fleet or FleetSettings()
            self.fleet = PostgresVCenterStore(db, fleet.fallback == "snapshot", 3 * fleet.lease_seconds)
            self.store = cast(VCenterStore, self.fleet)  # the same methods (tests/vcenter/test_vcenter_fleet.py)
            self._leads = {
                role: Leadership(db.url, VCENTER_WATCHER, f"vcenter-{role} {settings.url}", db.appliance)
                for role in ("events", "outbox")
            }
        else:
            self.store = VCenterStore(state_dir / "vcenter.sqlite3")
        self.work = state_dir / "vcenter"
        self.ctx = ActionContext(self.conn, self.store, self.policy, Tagging(self.conn))
        self._tasks: set[asyncio.Task[Any]] = set()
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._global = asyncio.Semaphore(self.policy.max_concurrent)
        self._hosts: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(self.policy.per_host_limit))
        self._wake = asyncio.Event()
        self._claim = asyncio.Event()
        self._seen_hosts: dict[str, str] = {}  # VM instance uuid -> host, as last placed by this watcher
        self._running = False
        self.peak_running = 0  # most jobs acquiring/scanning at once (metrics, benchmarks)
        self.peak_by_host: dict[str, int] = defaultdict(int)
        self._active = 0
        self._active_by_host: dict[str, int] = defaultdict(int)
        self.on_action: Callable[[Action], Awaitable[None]] | None = None  # tests and benchmarks
        self.events: EventQueue | None = None  # set: every quarantine action is queued as an ECS event
        self.on_event: Callable[[], None] | None = None

    # lifecycle

    async def start(self) -> None:
        """Resume unfinished jobs and start the trigger, relay and keep-alive loops."""
        self._running = True
        if self.fleet is not None:  # the jobs of this appliance's host, claimed from the fleet's
            self._spawn(self._claim_loop(self.fleet), "vcenter-claims")
        else:
            for job in await asyncio.to_thread(self.store.open_jobs):
                self._launch(job)
        self._spawn(self._watch_loop(), "vcenter-triggers")
        self._spawn(self._relay_loop(), "vcenter-outbox")
        self._spawn(self._keepalive_loop(), "vcenter-keepalive")
        self._spawn(self._retention_loop(), "vcenter-retention")

    async def stop(self) -> None:
        """Stop the loops; jobs in flight stop too and resume at the next start (snapshots removed)."""
        self._running = False
        tasks = list(self._tasks) + list(self._jobs.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.to_thread(self.conn.close)
        await asyncio.to_thread(self.store.close)
        for lead in self._leads.values():  # the next leader takes over at once
            await asyncio.to_thread(lead.release)

    async def _leading(self, role: str) -> bool:
        """This appliance holds ``role`` (always, without a fleet): one watcher, one relay per fleet."""
        lead = self._leads.get(role)
        return lead is None or await asyncio.to_thread(lead.acquire)

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # reads

    async def list_vms(self) -> list[VmInfo]:
        return await self.conn.call(list_vms, "list VMs")

    async def list_actions(self, vm_uuid: str = "", limit: int = 200) -> list[Action]:
        return await asyncio.to_thread(self.store.actions, vm_uuid, limit)

    async def list_jobs(self, limit: int = 100) -> list[Job]:
        return await asyncio.to_thread(self.store.list_jobs, limit)

    # triggers

    async def _watch_loop(self) -> None:
        instance, watcher, failures = "", None, 0
        while self._running:
            if not await self._leading("events"):
                watcher = None  # another appliance watches; its cursor is read again on taking over
                self._seen_hosts.clear()
                await asyncio.sleep(self.settings.poll_seconds)
                continue
            try:
                if watcher is None:
                    await self.conn.call(ensure_fields, "define the avscan custom attributes")
                    instance = self.conn.instance_uuid
                    cursor = await asyncio.to_thread(self.store.cursor, instance)
                    watcher = Watcher(self.policy.triggers, cursor)
                wait = self.settings.poll_seconds
                found, newest = await self.conn.call(
                    functools.partial(_round, watcher, wait=wait),
                    "wait for vCenter updates",
                    timeout=wait + self.settings.call_timeout,
                )
                for trigger in found:
                    await self.trigger(trigger, instance, newest)
                if newest is not None:
                    await asyncio.to_thread(self.store.set_cursor, instance, newest)
                if self.fleet is not None:
                    await self._follow_placements(self.fleet)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                log.warning("vCenter trigger loop: %s", getattr(e, "message", e))
                if watcher is not None:
                    watcher.reset()
                await asyncio.sleep(min(MAX_BACKOFF, 0.5 * 2 ** min(failures, 7)))

    async def trigger(self, trigger: Trigger, instance: str = "", cursor: int | None = None) -> Job | None:
        """A durable job for ``trigger``, or None when it coalesces into a job for the same VM."""
        if trigger.reason in ("power_on", "migrate", "attribute") and trigger.reason not in self.policy.triggers:
            return None
        move = (instance, cursor) if instance and cursor is not None else None
        trigger = await self._placed(trigger)
        open_job = await asyncio.to_thread(self.store.open_job_for, trigger.vm_uuid)
        last = open_job or await asyncio.to_thread(self.store.last_job_for, trigger.vm_uuid)
        recent = last is not None and time.time() - last.created_at < self.policy.dedupe_seconds
        if open_job is not None or (recent and trigger.reason not in ("attribute", "api")):
            assert last is not None
            log.info("%s on %s coalesced into job %s", trigger.reason, trigger.vm_name, last.id)
            if move:
                await asyncio.to_thread(self.store.set_cursor, *move)
            if trigger.reason == "attribute" and not await self._ack_pending(trigger.vm_uuid):
                await self._ack_request(last, trigger, coalesced=True)
            return None
        key = (
            f"event:{instance}:{trigger.event_key}"
            if trigger.event_key is not None
            else await self._request_key(trigger)
            if trigger.reason == "attribute"
            else f"{trigger.reason}:{time.time_ns()}"
        )
        job, created = await asyncio.to_thread(
            self.store.create_job, key, trigger.reason, trigger.vm_uuid, trigger.vm_name, trigger.host, move
        )
        if created:
            await asyncio.to_thread(
                self.db.audit, ACTOR, "vcenter.trigger", job.id, f"{trigger.reason} {trigger.vm_name}"
            )
            if trigger.reason == "attribute":
                await self._ack_request(job, trigger, coalesced=False)
            if self.fleet is None:
                self._launch(job)
            else:
                self._claim.set()  # ours if it is on our host; else its host's appliance claims it
        return job

    async def _placed(self, trigger: Trigger) -> Trigger:
        """With a fleet: record where the VM runs now (a migration moves it), or, when vCenter did
        not say, route by its last known placement, else to this appliance's host."""
        if self.fleet is None:
            return trigger
        if trigger.host:
            await asyncio.to_thread(self.fleet.place, trigger.vm_uuid, trigger.host)
            if trigger.reason == "migrate":
                log.info("%s now runs on %s: its scans go to that host's appliance", trigger.vm_name, trigger.host)
            return trigger
        host = await asyncio.to_thread(self.fleet.placed, trigger.vm_uuid) or self.fleet.db.host
        return replace(trigger, host=host)

    async def _follow_placements(self, fleet: PostgresVCenterStore) -> None:
        """Where each VM runs now (``runtime.host``, one bulk read): a VM that moved (vMotion,
        relocation, HA restart; with or without an event) is placed on its new host, so its next
        job goes to that host's appliance, and is a ``migrate`` trigger when the policy has it."""
        for vm in await self.conn.call(list_vms, "read where VMs run"):
            if not vm.host or not vm.instance_uuid or self._seen_hosts.get(vm.instance_uuid) == vm.host:
                continue  # unchanged since the last round: no write to PostgreSQL
            before = await asyncio.to_thread(fleet.move, vm.instance_uuid, vm.host)
            self._seen_hosts[vm.instance_uuid] = vm.host
            if before is None:
                continue
            log.info("%s moved from %s to %s", vm.name, before, vm.host)
            await self.trigger(Trigger("migrate", vm.instance_uuid, vm.name, vm.host))

    async def _claim_loop(self, fleet: PostgresVCenterStore) -> None:
        """Claim this host's jobs (new ones, and those of a dead appliance of this host once their
        lease expired), renew the leases of those running here; a job taken over is stopped here."""
        renew_every = fleet.db.lease_seconds / 3
        while self._running:
            try:
                asked = set(self._jobs)
                held = await asyncio.to_thread(fleet.renew, asked)
                for job_id in asked - held:
                    task = self._jobs.get(job_id)
                    if task is not None and not task.done():
                        log.warning("vCenter job %s: lease taken over; stopping it here", job_id)
                        task.cancel()
                for job in await asyncio.to_thread(fleet.open_jobs):
                    if job.host not in (fleet.db.host, "") and job.id not in self._jobs:
                        log.warning("vCenter job %s: no live appliance on %s; run here (fallback)", job.id, job.host)
                    self._launch(job)
            except ScannerError as e:
                log.warning("claiming vCenter jobs: %s", e.message)
            self._claim.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._claim.wait(), min(renew_every, self.settings.poll_seconds))

    async def _request_key(self, trigger: Trigger) -> str:
        """The job key of an ``avscan.request``: the VM and its request generation, the number of
        our clears of that attribute vCenter had confirmed when the sweep began reading it. A
        sweep that read the value before the clear landed gets the same key, and ``create_job``
        returns the job already made: one request, one job, whatever the timing. A value read
        after a clear landed is a new request."""
        generation = await asyncio.to_thread(self.store.clears_confirmed, trigger.vm_uuid, trigger.seen_at)
        return f"request:{trigger.vm_uuid}:{generation}"

    async def _ack_pending(self, vm_uuid: str) -> bool:
        """An acknowledgement (clearing avscan.request) is still on its way for this VM."""
        actions = await asyncio.to_thread(self.store.actions, vm_uuid, 50)
        return any(a.kind.startswith("request_ack") and a.state == "PENDING" for a in actions)

    async def _ack_request(self, job: Job, trigger: Trigger, coalesced: bool) -> None:
        note = "coalesced into" if coalesced else "queued as"
        values = {"avscan.request": "", "avscan.lastScan": f"{note} job {job.id} ({trigger.value})"}
        kind = "request_ack" if not coalesced else f"request_ack:{time.time_ns()}"
        await asyncio.to_thread(
            self.store.add_actions, job.id, job.vm_uuid, job.vm_name, [NewAction(kind, {"values": values})]
        )
        self._wake.set()

    async def scan_vm(self, vm_uuid: str, actor: str) -> tuple[Job, bool]:
        """Scan one VM now (API/CLI) through the same durable path as a trigger; True if it joined one in flight."""
        info = await self.conn.call(lambda si: vm_info(si, vm_uuid), f"find VM {vm_uuid}")
        job = await self.trigger(Trigger("api", info.instance_uuid, info.name, info.host))
        if job is not None:
            await asyncio.to_thread(self.db.audit, actor, "vcenter.scan", job.id, info.name)
            return job, False
        existing = await asyncio.to_thread(self.store.open_job_for, vm_uuid)
        existing = existing or await asyncio.to_thread(self.store.last_job_for, vm_uuid)
        assert existing is not None
        return existing, True

    # jobs

    def _launch(self, job: Job) -> None:
        if job.id in self._jobs:
            return
        task = asyncio.ensure_future(self._run_job(job))
        task.set_name(f"vcenter-job-{job.id}")
        self._jobs[job.id] = task
        task.add_done_callback(lambda _: self._jobs.pop(job.id, None))

    async def wait_idle(self, timeout: float) -> None:
        """Wait until no job runs, none is open for this appliance and no action is pending (tests,
        benchmarks). Open jobs count, not only launched ones: a trigger stores its job (and moves
        the event cursor) a moment before launching it, and in a fleet the claim loop takes a job
        made here for this host a moment later."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = [a for a in await self.list_actions() if a.state == "PENDING"]
            if not self._jobs and not pending and not await self._open_jobs():
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"vCenter work not idle after {timeout} s")

    async def _open_jobs(self) -> int:
        """Open jobs this appliance has or will take: all of them alone, its claimable ones in a fleet."""
        if self.fleet is not None:
            return await asyncio.to_thread(self.fleet.claimable)
        return len(await asyncio.to_thread(self.store.open_jobs))

    async def _run_job(self, job: Job) -> None:
        host = job.host or "?"
        async with self._global, self._hosts[host]:
            self._active += 1
            self._active_by_host[host] += 1
            self.peak_running = max(self.peak_running, self._active)
            self.peak_by_host[host] = max(self.peak_by_host[host], self._active_by_host[host])
            try:
                await self._pipeline(job)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("vCenter job %s failed", job.id)
                await self._finish(job, "ERROR", 0, [f"internal error: {e}"], [])
            finally:
                self._active -= 1
                self._active_by_host[host] -= 1

    async def _pipeline(self, job: Job) -> None:
        directory = self.work / job.id
        snap_name = acquisition.snapshot_name(job.id)
        notes: list[str] = []
        with_disks = self.policy.scan_disks and "disk" in REGISTRY
        if self.policy.scan_disks and not with_disks:
            notes.append("disk: not scanned (no 'disk' target in this build)")
        scan_ids = list(job.scan_ids)
        if not scan_ids:
            await asyncio.to_thread(self.store.update_job, job.id, state="ACQUIRING", snapshot=snap_name)
            try:
                acquired = await self._acquire(job, snap_name, directory, with_disks)
            except VCenterError as e:
                await asyncio.to_thread(acquisition.discard, directory)
                await self._finish(job, "ERROR", 0, [*notes, f"acquisition failed: {e.message}"], [])
                return
            finally:
                await self._remove_snapshot(job, snap_name)
            notes += acquired.notes
            scan_ids, refused = await self._submit(job, acquired)
            notes += refused
            if refused and not scan_ids:
                await asyncio.to_thread(acquisition.discard, directory)
                await self._finish(job, "ERROR", 0, notes, [])
                return
            await asyncio.to_thread(self.store.update_job, job.id, state="SCANNING", scan_ids=scan_ids, notes=notes)
        else:  # resumed after a restart: the scans exist; make sure the snapshot is gone
            notes = list(job.notes)
            await self._remove_snapshot(job, snap_name)
        try:
            kind, severity, digest, summary, targets = await self._verdict(scan_ids)
        finally:
            await asyncio.to_thread(acquisition.discard, directory)
        if not scan_ids:
            kind, summary = "INCOMPLETE", "nothing acquired"
        await self._finish(job, kind, severity, [*notes, summary], scan_ids, digest, memory="memory" in targets)

    async def _acquire(self, job: Job, name: str, directory: Path, with_disks: bool) -> acquisition.Acquired:
        conn = self.conn
        moref = await conn.call(
            lambda si: acquisition.take_snapshot(conn, si, job.vm_uuid, name),
            f"snapshot {job.vm_name}",
            timeout=self.settings.call_timeout * 5,
        )
        return await conn.call(
            lambda si: acquisition.fetch(conn, si, job.vm_uuid, moref, directory, with_disks),
            f"download {job.vm_name}",
            timeout=self.settings.download_timeout,
        )

    async def _remove_snapshot(self, job: Job, name: str) -> None:
        """Remove the acquisition snapshot; shielded from cancellation, retried a few times."""
        conn = self.conn

        async def remove() -> None:
            for attempt in range(5):
                try:
                    result = await conn.call(
                        lambda si: acquisition.remove_snapshot(conn, si, job.vm_uuid, name),
                        f"remove snapshot {name}",
                        timeout=self.settings.call_timeout * 5,
                    )
                    log.info("job %s: %s", job.id, result)
                    return
                except VCenterError as e:
                    log.warning("job %s: snapshot removal failed (attempt %d): %s", job.id, attempt + 1, e.message)
                    await asyncio.sleep(0.5 * 2**attempt)
            log.error("job %s: snapshot %s still present; removed when the job resumes", job.id, name)

        await asyncio.shield(asyncio.ensure_future(remove()))

    async def _submit(self, job: Job, acquired: acquisition.Acquired) -> tuple[list[str], list[str]]:
        """The scans started for what was acquired, and why any could not be started."""
        ids, refused = [], []
        wanted = []
        if acquired.memory is not None:
            wanted.append(("memory", TargetSpec("memory", {"path": str(acquired.memory), "format": "vmware"})))
        for i, disk in enumerate(acquired.disks):
            # hook: the "disk" target (VMDK) is registered by the disk-scanning work
            wanted.append((f"disk{i}", TargetSpec("disk", {"path": str(disk)})))
        for what, spec in wanted:
            try:
                ids.append((await self.scans.submit(spec, self._subject(job), ACTOR, f"vcenter:{job.id}:{what}")).id)
            except ScannerError as e:
                refused.append(f"{what}: not scanned: {e.message}")
        return ids, refused

    @staticmethod
    def _subject(job: Job) -> dict[str, Any]:
        """Scan options naming the VM, so the scan's events carry it as ``host.*``/``cloud.*``."""
        return {"subject": {"name": job.vm_name, "id": job.vm_uuid, "host": job.host, "provider": "vsphere"}}

    async def _verdict(self, scan_ids: list[str]) -> tuple[str, int, str, str, set[str]]:
        """Worst verdict, highest severity, ruleset digest, a summary, and the target kinds scanned."""
        worst, severity, digest, parts, targets = "", 0, "", [], set()
        for scan_id in scan_ids:
            async for _ in self.scans.watch(scan_id):
                pass
            record, _ = await self.scans.get(scan_id)
            while record.state not in FINAL_STATES:
                await asyncio.sleep(0.1)
                record, _ = await self.scans.get(scan_id)
            verdict = record.verdict
            kind = verdict.kind.value if verdict else "INCOMPLETE"
            findings = await asyncio.to_thread(self.db.findings, scan_id)  # the record keeps them apart
            severity = max([severity, *(f.severity for f in findings)])
            digest = digest or record.ruleset_digest
            if SEVERITY_ORDER[kind] > SEVERITY_ORDER[worst]:
                worst = kind
            reason = f": {verdict.reason}" if verdict is not None and verdict.reason else ""
            parts.append(f"{record.target.kind} scan {scan_id}: {kind}{reason}")
            targets.add(record.target.kind)
        return worst or "INCOMPLETE", severity, digest, "; ".join(parts), targets

    async def _finish(
        self,
        job: Job,
        kind: str,
        severity: int,
        notes: list[str],
        scan_ids: list[str],
        digest: str = "",
        memory: bool = False,
    ) -> None:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        summary = f"{kind}" + (f" severity {severity}" if severity else "")
        values = {
            "avscan.verdict": summary,
            "avscan.lastScan": f"{when} job {job.id} {summary} scans {','.join(scan_ids) or '-'}",
            "avscan.ruleset": digest or "-",
        }
        if await self._keeps_quarantine(job.vm_uuid, kind, memory):
            del values["avscan.verdict"]  # the verdict that quarantined stands until a release
            notes = [*notes, "quarantine kept: this verdict does not lift it"]
        message = self._scrub(f"avscan: {job.vm_name} {summary} ({job.reason}); {'; '.join(notes)}")
        actions = [NewAction("attributes", {"values": values}), NewAction("event", {"message": message[:900]})]
        if kind in (VerdictKind.MALICIOUS.value, VerdictKind.SUSPICIOUS.value):
            actions += [NewAction(step, {"severity": severity}) for step in self.policy.steps(severity)]
        state = "DONE" if kind != "ERROR" else "FAILED"
        # dry run: the steps are written DRY_RUN in the same transaction, so the relay never sees them PENDING
        await asyncio.to_thread(
            self.store.finish_job, job.id, state, kind, severity, tuple(notes), actions, self.policy.dry_run
        )
        await asyncio.to_thread(self.db.audit, ACTOR, "vcenter.verdict", job.id, f"{job.vm_name}: {summary}")
        if kind == "CLEAN" and self.policy.auto_release:
            if memory:  # a CLEAN that never saw the memory (disks only) is not proof enough to lift a quarantine
                await self.release(job.vm_uuid, ACTOR, resume=False, reason=f"clean rescan (job {job.id})")
            else:
                log.warning("job %s: CLEAN without a memory scan; quarantine (if any) kept", job.id)
        self._wake.set()

    async def _keeps_quarantine(self, vm_uuid: str, kind: str, memory: bool) -> bool:
        """The VM is quarantined and this verdict neither confirms it (MALICIOUS/SUSPICIOUS) nor
        lifts it (a CLEAN memory scan with auto-release): it must not replace the verdict."""
        if kind in (VerdictKind.MALICIOUS.value, VerdictKind.SUSPICIOUS.value):
            return False
        if kind == VerdictKind.CLEAN.value and memory and self.policy.auto_release:
            return False
        actions = await asyncio.to_thread(self.store.actions, vm_uuid, 1000)
        return any(a.kind in QUARANTINE_STEPS and a.state in ("DONE", "PENDING") for a in actions)

    def _scrub(self, text: str) -> str:
        """Text for vCenter without the appliance's own paths (its state and work directories)."""
        for root in sorted({str(self.work.parent), str(self.work)}, key=len, reverse=True):
            text = re.sub(
                re.escape(root) + r"/[^\s:;,)]*", lambda m: "<appliance>/" + m.group(0).rsplit("/", 1)[-1], text
            )
        return text

    # outbox relay

    async def _relay_loop(self) -> None:
        while self._running:
            try:
                if await self._leading("outbox"):  # one appliance of the fleet applies the outbox
                    await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("vCenter outbox relay")
            next_at = await asyncio.to_thread(self.store.next_due)
            delay = 1.0 if next_at is None else max(0.0, min(1.0, next_at - time.time()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def relay_once(self) -> int:
        """Apply due actions, oldest first, one at a time per VM (so the ladder keeps its order)."""
        now, done, blocked = time.time(), 0, set()
        for action in await asyncio.to_thread(self.store.due_actions, now):
            if action.vm_uuid in blocked:
                continue
            if action.next_at > now:
                blocked.add(action.vm_uuid)
                continue
            if await self._apply(action):
                done += 1
            else:
                blocked.add(action.vm_uuid)
        return done

    async def _apply(self, action: Action) -> bool:
        fn = APPLY[action.kind.split(":", 1)[0]]
        try:
            result = await self.conn.call(lambda si: fn(self.ctx, si, action), f"{action.kind} on {action.vm_name}")
        except VCenterError as e:
            if e.not_found:
                await asyncio.to_thread(self.store.action_done, action.seq, "ABANDONED", e.message)
                return True
            tries = action.attempts + 1
            if not e.transient and tries >= self.policy.max_attempts:
                give_up = f"gave up after {tries} attempts: vCenter keeps refusing it (see last_error)"
                await self._emit(action, "failure", e.message)
                await asyncio.to_thread(self.store.action_failed, action.seq, e.message, time.time(), give_up)
                log.error("action %s on %s FAILED after %d attempts: %s", action.kind, action.vm_name, tries, e.message)
                await asyncio.to_thread(
                    self.db.audit, ACTOR, "vcenter.action_failed", action.vm_uuid, f"{action.kind}: {e.message}"
                )
                return True  # terminal: the VM's next steps go on
            backoff = min(MAX_BACKOFF, 0.5 * 2 ** min(action.attempts, 7)) * (0.8 + 0.4 * random.random())  # noqa: S311
            await asyncio.to_thread(self.store.action_failed, action.seq, e.message, time.time() + backoff)
            log.warning("action %s on %s: %s (retry in %.1f s)", action.kind, action.vm_name, e.message, backoff)
            return False
        await self._emit(action, "success", result)  # before DONE: a crash between redelivers, never loses
        await asyncio.to_thread(self.store.action_done, action.seq, "DONE", result)
        log.info(
            "vCenter action %s on %s: done",
            action.kind,
            action.vm_name,
            extra={"event.action": f"vcenter-{action.kind.split(':', 1)[0]}", "event.outcome": "success"},
        )
        if self.on_action is not None:
            await self.on_action(action)
        return True

    async def _emit(self, action: Action, outcome: str, detail: str) -> None:
        """Queue the ECS event of a quarantine action (not of verdict attributes or vCenter events)."""
        step = action.kind.split(":", 1)[0]
        if self.events is None or step not in ecs.QUARANTINE_STEPS | ecs.RELEASE_STEPS:
            return  # verdict attributes, vCenter events and request acks are not quarantine actions
        doc = ecs.action_document(
            f"{action.job_id}/{action.kind}", action.kind, outcome, action.vm_name, action.vm_uuid, time.time(), detail
        )
        await asyncio.to_thread(self.events.append, [doc])
        if self.on_event is not None:
            self.on_event()

    # release

    async def release(self, vm_uuid: str, actor: str, resume: bool = False, reason: str = "") -> list[Action]:
        """Undo the quarantine of a VM: exact prior NIC state, tag removed, optionally resumed."""
        actions = await asyncio.to_thread(self.store.actions, vm_uuid, 1000)
        applied = [a for a in actions if a.kind in REVERSIBLE and a.state == "DONE"]
        pending = [
            a for a in actions if a.kind in ("tag", "disconnect", "snapshot", "suspend") and a.state == "PENDING"
        ]
        if not applied and not pending:
            return []
        for a in pending:
            await asyncio.to_thread(self.store.action_done, a.seq, "ABANDONED", f"released by {actor} before applied")
        release_id = f"release-{time.time_ns()}"
        name = (applied or pending)[0].vm_name
        new = [
            NewAction(REVERSIBLE[a.kind], {"prior": a.prior})
            for a in sorted(applied, key=lambda a: -a.seq)
            if REVERSIBLE[a.kind] != "resume" or resume
        ]
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        why = f": {reason}" if reason else ""
        released = {"avscan.release": f"released by {actor} at {when}{why}"[:500]}
        new.append(NewAction("release_attributes", {"values": released}))
        new.append(NewAction("release_event", {"message": f"avscan: {name} released by {actor} {reason}".strip()}))
        rows = await asyncio.to_thread(self.store.add_actions, release_id, vm_uuid, name, new)
        await asyncio.to_thread(self.store.mark_reverted, [a.seq for a in applied])
        await asyncio.to_thread(self.db.audit, actor, "vcenter.release", vm_uuid, reason)
        self._wake.set()
        return rows

    # forensic snapshot retention

    async def expire_forensic(self) -> list[str]:
        """Remove forensic snapshots older than the policy's retention (none when it is 0)."""
        days = self.policy.forensic_retention_days
        if not days:
            return []
        older_than = time.time() - days * 86400
        conn = self.conn
        removed: list[str] = await conn.call(
            lambda si: acquisition.expire_snapshots(conn, si, FORENSIC_PREFIX, older_than),
            "expire forensic snapshots",
            timeout=self.settings.download_timeout,
        )
        for name in removed:
            await asyncio.to_thread(self.db.audit, ACTOR, "vcenter.forensic_expired", name, f"older than {days:g} days")
        return removed

    async def _retention_loop(self) -> None:
        while self._running:
            await asyncio.sleep(RETENTION_CHECK_SECONDS)
            with contextlib.suppress(VCenterError):
                await self.expire_forensic()

    # keep-alive

    async def _keepalive_loop(self) -> None:
        while self._running:
            await asyncio.sleep(self.settings.keepalive_seconds)
            with contextlib.suppress(VCenterError):
                await self.conn.call(lambda si: si.CurrentTime(), "keep-alive")


def _round(watcher: Watcher, si: Any, wait: float) -> tuple[list[Trigger], int | None]:
    return watcher.round(si, wait)
