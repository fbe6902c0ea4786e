"""Durable vCenter state in SQLite (WAL, synchronous=FULL): trigger cursor, jobs, the action outbox.

Contract:
- ``cursor``/``set_cursor``: the last vCenter event key handled per vCenter instance; a trigger's
  job row and the cursor move commit in one transaction, so a restart neither misses nor repeats.
- A job (one triggered scan of one VM) is created once per trigger key; ``open_job_for`` finds a
  job still in flight for a VM so bursts coalesce.
- An action is created once per ``(job_id, kind)`` (``INSERT OR IGNORE``), recorded with the verdict
  in one transaction (a transactional outbox); the relay marks it DONE only after vCenter
  confirmed it. ``prior`` (the state to restore on release) is written once, before the first try.
- Dry run: the quarantine steps of a finished job are written DRY_RUN (never PENDING, so the relay
  cannot pick one up), saying what would have been done; verdict attributes and the event stay PENDING.
- An action ends DONE, DRY_RUN, ABANDONED (VM gone, released first), REVERTED (undone by a release)
  or FAILED (vCenter kept refusing it; ``last_error`` holds vCenter's error).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.errors import NotFound
from scanner.state.sqlite import SqliteStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS vc_cursor (
    instance TEXT PRIMARY KEY,
    event_key INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS vc_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    trigger_key TEXT NOT NULL UNIQUE,
    reason TEXT NOT NULL,
    vm_uuid TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    host TEXT NOT NULL,
    state TEXT NOT NULL,
    snapshot TEXT NOT NULL DEFAULT '',
    scan_ids TEXT NOT NULL DEFAULT '[]',
    verdict TEXT NOT NULL DEFAULT '',
    severity INTEGER NOT NULL DEFAULT 0,
    notes TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS vc_jobs_vm ON vc_jobs(vm_uuid, state);
CREATE TABLE IF NOT EXISTS vc_actions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    vm_uuid TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    prior TEXT,
    result TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    done_at REAL,
    UNIQUE (job_id, kind)
);
CREATE INDEX IF NOT EXISTS vc_actions_state ON vc_actions(state, next_at);
"""

OPEN_JOB_STATES = ("QUEUED", "ACQUIRING", "SCANNING", "PUBLISHING")
ACTION_STATES = ("PENDING", "DONE", "DRY_RUN", "ABANDONED", "REVERTED", "FAILED")
DRY_RUN_KINDS = {
    "tag": "attach the quarantine tag",
    "disconnect": "disconnect the vNICs",
    "snapshot": "take a forensic snapshot",
    "suspend": "suspend the VM",
}
"""The quarantine steps a dry run records instead of applying, and what each would do."""


@dataclass(frozen=True)
class Job:
    id: str
    trigger_key: str
    reason: str
    vm_uuid: str
    vm_name: str
    host: str
    state: str
    snapshot: str
    scan_ids: tuple[str, ...]
    verdict: str
    severity: int
    notes: tuple[str, ...]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Action:
    seq: int
    job_id: str
    vm_uuid: str
    vm_name: str
    kind: str
    params: dict[str, Any]
    state: str
    attempts: int
    next_at: float
    last_error: str
    prior: Any
    result: str
    created_at: float
    done_at: float | None


@dataclass(frozen=True)
class NewAction:
    kind: str
    params: dict[str, Any]


class VCenterStore(SqliteStore):
    """One connection, one lock; calls are blocking (run them off the event loop)."""

    shared = False  # this appliance's own (PostgresVCenterStore is the fleet's)

    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    # cursor

    def cursor(self, instance: str) -> int | None:
        with self._lock:
            row = self._conn.execute("SELECT event_key FROM vc_cursor WHERE instance = ?", (instance,)).fetchone()
        return int(row[0]) if row else None

    def set_cursor(self, instance: str, event_key: int) -> None:
        with self._tx() as c:
            _set_cursor(c, instance, event_key)

    # jobs

    def create_job(
        self, trigger_key: str, reason: str, vm_uuid: str, vm_name: str, host: str, cursor: tuple[str, int] | None
    ) -> tuple[Job, bool]:
        """A QUEUED job for this trigger (False: the trigger was seen before); moves the cursor too."""
        now = time.time()
        with self._tx() as c:
            if cursor is not None:
                _set_cursor(c, *cursor)
            row = c.execute("SELECT * FROM vc_jobs WHERE trigger_key = ?", (trigger_key,)).fetchone()
            if row:
                return _job(row), False
            job_id = uuid.uuid4().hex
            c.execute(
                "INSERT INTO vc_jobs (id, trigger_key, reason, vm_uuid, vm_name, host, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'QUEUED', ?, ?)",
                (job_id, trigger_key, reason, vm_uuid, vm_name, host, now, now),
            )
            row = c.execute("SELECT * FROM vc_jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row), True

    def clears_confirmed(self, vm_uuid: str, before: float) -> int:
        """How many of our clears of the VM's ``avscan.request`` vCenter confirmed before ``before``."""
        with self._lock:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM vc_actions WHERE vm_uuid = ? AND kind LIKE 'request_ack%'"
                " AND state = 'DONE' AND done_at < ?",
                (vm_uuid, before),
            ).fetchone()
        return int(row[0])

    def open_job_for(self, vm_uuid: str) -> Job | None:
        marks = ",".join("?" * len(OPEN_JOB_STATES))
        with self._lock:
            row = self._conn.execute(
                f"SELECT * FROM vc_jobs WHERE vm_uuid = ? AND state IN ({marks}) ORDER BY seq DESC LIMIT 1",  # noqa: S608
                (vm_uuid, *OPEN_JOB_STATES),
            ).fetchone()
        return _job(row) if row else None

    def last_job_for(self, vm_uuid: str) -> Job | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM vc_jobs WHERE vm_uuid = ? ORDER BY seq DESC LIMIT 1", (vm_uuid,)
            ).fetchone()
        return _job(row) if row else None

    def get_job(self, job_id: str) -> Job:
        with self._lock:
            row = self._conn.execute("SELECT * FROM vc_jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"vCenter job {job_id} not found")
        return _job(row)

    def open_jobs(self) -> list[Job]:
        marks = ",".join("?" * len(OPEN_JOB_STATES))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM vc_jobs WHERE state IN ({marks}) ORDER BY seq",  # noqa: S608 - placeholders only
                OPEN_JOB_STATES,
            ).fetchall()
        return [_job(r) for r in rows]

    def job_page(self, limit: int, before_seq: int | None = None) -> list[tuple[int, Job]]:
        """(seq, job) newest first, older than ``before_seq`` (a page cursor) when given."""
        sql, args = "SELECT * FROM vc_jobs", list[object]()
        if before_seq is not None:
            sql += " WHERE seq < ?"
            args.append(before_seq)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [(int(r[0]), _job(r)) for r in rows]

    def list_jobs(self, limit: int = 100) -> list[Job]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM vc_jobs ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [_job(r) for r in rows]

    def update_job(self, job_id: str, **changes: Any) -> Job:
        """Set columns (state, snapshot, scan_ids, verdict, severity, notes); lists are stored as JSON."""
        sets, args = job_changes(changes, "?")
        with self._tx() as c:
            c.execute(
                f"UPDATE vc_jobs SET {', '.join(sets)}, updated_at = ? WHERE id = ?",  # noqa: S608 - fixed names
                (*args, time.time(), job_id),
            )
            row = c.execute("SELECT * FROM vc_jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row)

    def finish_job(
        self,
        job_id: str,
        state: str,
        verdict: str,
        severity: int,
        notes: tuple[str, ...],
        actions: list[NewAction],
        dry_run: bool,
    ) -> list[Action]:
        """The job's outcome and its outbox actions, in one transaction (created once per kind)."""
        now = time.time()
        with self._tx() as c:
            job = _job(c.execute("SELECT * FROM vc_jobs WHERE id = ?", (job_id,)).fetchone())
            c.execute(
                "UPDATE vc_jobs SET state=?, verdict=?, severity=?, notes=?, updated_at=? WHERE id=?",
                (state, verdict, severity, json.dumps(list(notes)), now, job_id),
            )
            _insert_actions(c, job_id, job.vm_uuid, job.vm_name, actions, dry_run, now)
            rows = c.execute("SELECT * FROM vc_actions WHERE job_id = ? ORDER BY seq", (job_id,)).fetchall()
        return [_action(r) for r in rows]

    # outbox

    def add_actions(self, job_id: str, vm_uuid: str, vm_name: str, actions: list[NewAction]) -> list[Action]:
        now = time.time()
        with self._tx() as c:
            _insert_actions(c, job_id, vm_uuid, vm_name, actions, False, now)
            rows = c.execute("SELECT * FROM vc_actions WHERE job_id = ? ORDER BY seq", (job_id,)).fetchall()
        return [_action(r) for r in rows]

    def due_actions(self, now: float) -> list[Action]:
        """PENDING actions, oldest first; the relay keeps each VM's order (mildest step first)."""
        with self._lock:
            rows = self._conn.execute("SELECT * FROM vc_actions WHERE state = 'PENDING' ORDER BY seq").fetchall()
        return [_action(r) for r in rows]

    def next_due(self) -> float | None:
        with self._lock:
            row = self._conn.execute("SELECT MIN(next_at) FROM vc_actions WHERE state = 'PENDING'").fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def actions(self, vm_uuid: str = "", limit: int = 200, before_seq: int | None = None) -> list[Action]:
        """Newest first; only ``vm_uuid``'s when given; older than ``before_seq`` (a page cursor) when given."""
        sql, args = "SELECT * FROM vc_actions WHERE 1=1", list[object]()
        if vm_uuid:
            sql += " AND vm_uuid = ?"
            args.append(vm_uuid)
        if before_seq is not None:
            sql += " AND seq < ?"
            args.append(before_seq)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [_action(r) for r in rows]

    def action_counts(self) -> dict[str, int]:
        """How many actions are in each state (metrics: outbox depth, failures)."""
        with self._lock:
            rows = self._conn.execute("SELECT state, COUNT(*) FROM vc_actions GROUP BY state").fetchall()
        return {state: int(n) for state, n in rows}

    def set_prior(self, seq: int, prior: Any) -> Any:
        """Record the state before the first attempt; never overwritten. Returns the stored value."""
        with self._tx() as c:
            c.execute("UPDATE vc_actions SET prior = ? WHERE seq = ? AND prior IS NULL", (json.dumps(prior), seq))
            row = c.execute("SELECT prior FROM vc_actions WHERE seq = ?", (seq,)).fetchone()
        return json.loads(row[0])

    def action_done(self, seq: int, state: str, result: str) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE vc_actions SET state=?, result=?, done_at=?, attempts=attempts+1, last_error=''"
                " WHERE seq=? AND state='PENDING'",
                (state, result, time.time(), seq),
            )

    def action_failed(self, seq: int, error: str, next_at: float, give_up: str = "") -> None:
        """One more failed try: retried at ``next_at``, or FAILED for good with ``give_up`` as the result."""
        with self._tx() as c:
            if give_up:
                c.execute(
                    "UPDATE vc_actions SET state='FAILED', attempts=attempts+1, last_error=?, result=?, done_at=?"
                    " WHERE seq=? AND state='PENDING'",
                    (error[:500], give_up[:500], time.time(), seq),
                )
                return
            c.execute(
                "UPDATE vc_actions SET attempts=attempts+1, last_error=?, next_at=? WHERE seq=?",
                (error[:500], next_at, seq),
            )

    def mark_reverted(self, seqs: list[int]) -> None:
        with self._tx() as c:
            c.executemany("UPDATE vc_actions SET state='REVERTED' WHERE seq=? AND state='DONE'", [(s,) for s in seqs])


def _set_cursor(c: sqlite3.Connection, instance: str, event_key: int) -> None:
    c.execute(
        "INSERT INTO vc_cursor (instance, event_key, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT(instance) DO UPDATE SET event_key = MAX(event_key, excluded.event_key),"
        " updated_at = excluded.updated_at",
        (instance, event_key, time.time()),
    )


def dry_run_rows(
    job_id: str, vm_uuid: str, vm_name: str, actions: list[NewAction], dry_run: bool, now: float
) -> list[tuple[Any, ...]]:
    """The outbox rows of ``actions`` (job_id, vm_uuid, vm_name, kind, params, state, result,
    next_at, created_at, done_at): PENDING, or DRY_RUN with what the step would have done."""
    rows = []
    for a in actions:
        if dry_run and a.kind in DRY_RUN_KINDS:
            state, result, done = "DRY_RUN", f"dry run: would {DRY_RUN_KINDS[a.kind]}; not applied", now
        else:
            state, result, done = "PENDING", "", None
        rows.append((job_id, vm_uuid, vm_name, a.kind, json.dumps(a.params), state, result, now, now, done))
    return rows


def _insert_actions(
    c: sqlite3.Connection, job_id: str, vm_uuid: str, vm_name: str, actions: list[NewAction], dry_run: bool, now: float
) -> None:
    rows = dry_run_rows(job_id, vm_uuid, vm_name, actions, dry_run, now)
    c.executemany(
        "INSERT OR IGNORE INTO vc_actions"
        " (job_id, vm_uuid, vm_name, kind, params, state, result, next_at, created_at, done_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def job_changes(changes: Mapping[str, Any], mark: str) -> tuple[list[str], list[Any]]:
    """``update_job``'s ``SET`` terms (``column = <mark>``) and values, for either backend: only
    the changeable columns; lists are stored as JSON."""
    sets, args = [], []
    for key, value in changes.items():
        if key not in {"state", "snapshot", "scan_ids", "verdict", "severity", "notes"}:
            raise ValueError(key)
        sets.append(f"{key} = {mark}")
        args.append(json.dumps(list(value)) if key in ("scan_ids", "notes") else value)
    return sets, args


def _job(row: tuple[Any, ...]) -> Job:
    (_, job_id, key, reason, vm_uuid, name, host, state, snap, scans, verdict, sev, notes, created, updated) = row
    return Job(
        job_id,
        key,
        reason,
        vm_uuid,
        name,
        host,
        state,
        snap,
        tuple(json.loads(scans)),
        verdict,
        sev,
        tuple(json.loads(notes)),
        created,
        updated,
    )


def _action(row: tuple[Any, ...]) -> Action:
    (seq, job_id, vm_uuid, name, kind, params, state, attempts, next_at, error, prior, result, created, done) = row
    return Action(
        seq,
        job_id,
        vm_uuid,
        name,
        kind,
        json.loads(params),
        state,
        attempts,
        next_at,
        error,
        json.loads(prior) if prior is not None else None,
        result,
        created,
        done,
    )
