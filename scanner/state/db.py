"""Durable state in SQLite (WAL, synchronous=FULL): scan jobs, findings, audit.

A scan row is committed before its id is returned to the caller, so an acknowledged scan
survives a crash; on start the service re-queues scans left QUEUED, RUNNING or INTERRUPTED.
Calls are synchronous and thread-safe (one connection, one lock): the async service runs them
off the event loop.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.errors import NotFound
from scanner.outputs.queue import EVENTS_SCHEMA, append_in
from scanner.state.codec import finding_from_dict, finding_to_dict, verdict_from_dict, verdict_to_dict
from scanner.state.sqlite import SqliteStore
from scanner.targets.base import TargetSpec
from scanner.verdicts import Finding, Verdict

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    request_id TEXT UNIQUE,
    target_kind TEXT NOT NULL,
    target_params TEXT NOT NULL,
    options TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    ruleset_digest TEXT,
    verdict TEXT
);
CREATE INDEX IF NOT EXISTS scans_state ON scans(state);
CREATE TABLE IF NOT EXISTS findings (
    scan_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (scan_id, seq)
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""

RESUMABLE = ("QUEUED", "RUNNING", "INTERRUPTED")


@dataclass(frozen=True)
class ScanRecord:
    id: str
    request_id: str
    target: TargetSpec
    options: dict[str, Any]
    requested_by: str
    state: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    ruleset_digest: str
    verdict: Verdict | None
    seq: int
    findings_count: int = 0


@dataclass(frozen=True)
class AuditRecord:
    at: float
    actor: str
    action: str
    subject: str
    detail: str


class Database(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA + EVENTS_SCHEMA)

    # scans

    def create_scan(
        self, target: TargetSpec, options: dict[str, Any], requested_by: str, request_id: str = ""
    ) -> tuple[ScanRecord, bool]:
        """Insert a QUEUED scan; with a known ``request_id`` return the existing one (False)."""
        with self._tx() as c:
            if request_id:
                row = c.execute("SELECT * FROM scans WHERE request_id = ?", (request_id,)).fetchone()
                if row:
                    return _readable(row), False
            scan_id = uuid.uuid4().hex
            c.execute(
                "INSERT INTO scans (id, request_id, target_kind, target_params, options, requested_by,"
                " state, created_at) VALUES (?, ?, ?, ?, ?, ?, 'QUEUED', ?)",
                (
                    scan_id,
                    request_id or None,
                    target.kind,
                    json.dumps(dict(target.params)),
                    json.dumps(options),
                    requested_by,
                    time.time(),
                ),
            )
            row = c.execute("SELECT * FROM scans WHERE id = ?", (scan_id,)).fetchone()
        return _readable(row), True

    def get_scan(self, scan_id: str) -> ScanRecord:
        with self._lock:
            row = self._conn.execute("SELECT * FROM scans WHERE id = ?", (scan_id,)).fetchone()
        if row is None:
            raise NotFound(f"scan {scan_id} not found")
        return _readable(row)

    def list_scans(self, limit: int, before_seq: int | None, state: str | None) -> list[ScanRecord]:
        sql = "SELECT * FROM scans WHERE 1=1"
        args: list[object] = []
        if before_seq is not None:
            sql += " AND seq < ?"
            args.append(before_seq)
        if state:
            sql += " AND state = ?"
            args.append(state)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [_readable(r) for r in rows]

    def state_counts(self) -> dict[str, int]:
        """How many scans are in each state (metrics)."""
        with self._lock:
            rows = self._conn.execute("SELECT state, COUNT(*) FROM scans GROUP BY state").fetchall()
        return {state: int(n) for state, n in rows}

    def resumable(self) -> list[ScanRecord]:
        marks = ",".join("?" * len(RESUMABLE))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM scans WHERE state IN ({marks}) ORDER BY seq",  # noqa: S608 - placeholders only
                RESUMABLE,
            ).fetchall()
        return [_readable(r) for r in rows]

    def mark_running(self, scan_id: str, ruleset_digest: str) -> bool:
        """QUEUED -> RUNNING; False if the scan left QUEUED meanwhile (e.g. it was cancelled)."""
        with self._tx() as c:
            updated = c.execute(
                "UPDATE scans SET state='RUNNING', started_at=?, attempts=attempts+1,"
                " ruleset_digest=? WHERE id=? AND state='QUEUED'",
                (time.time(), ruleset_digest, scan_id),
            ).rowcount
            if updated:
                c.execute("DELETE FROM findings WHERE scan_id = ?", (scan_id,))
        return bool(updated)

    def find_request(self, request_id: str) -> ScanRecord | None:
        """The scan started for an idempotency key, if any."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM scans WHERE request_id = ?", (request_id,)).fetchone()
        return _readable(row) if row else None

    def set_state(self, scan_id: str, state: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE scans SET state=? WHERE id=?", (state, scan_id))

    def finish_scan(
        self, scan_id: str, state: str, verdict: Verdict | None, events: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        """Record the final state, the verdict, all findings and the scan's outgoing ``events``
        (ECS documents for the event queue) in one transaction."""
        body = json.dumps(verdict_to_dict(verdict)) if verdict else None
        with self._tx() as c:
            c.execute("DELETE FROM findings WHERE scan_id = ?", (scan_id,))
            if verdict:
                c.executemany(
                    "INSERT INTO findings (scan_id, seq, body) VALUES (?, ?, ?)",
                    [(scan_id, i, json.dumps(finding_to_dict(f))) for i, f in enumerate(verdict.findings)],
                )
            c.execute(
                "UPDATE scans SET state=?, finished_at=?, verdict=? WHERE id=?",
                (state, time.time(), body, scan_id),
            )
            append_in(c, events)

    def findings(self, scan_id: str, offset: int = 0, limit: int = 1_000_000) -> list[Finding]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT body FROM findings WHERE scan_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
                (scan_id, offset, limit),
            ).fetchall()
        return [finding_from_dict(json.loads(r[0])) for r in rows]

    # audit

    def audit(self, actor: str, action: str, subject: str, detail: str = "") -> None:
        """Record who did what; also logged at INFO (the audit trail in the service log)."""
        log.info(
            "audit: %s %s %s%s",
            actor,
            action,
            subject,
            f" ({detail})" if detail else "",
            extra={"event.action": action, "event.kind": "event", "user.name": actor, "avscan.audit.subject": subject},
        )
        with self._tx() as c:
            c.execute(
                "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
                (time.time(), actor, action, subject, detail),
            )

    def audit_log(self, limit: int = 100) -> list[AuditRecord]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT at, actor, action, subject, detail FROM audit ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        return [AuditRecord(*r) for r in rows]


def _readable(row: tuple[Any, ...]) -> ScanRecord:
    """The record of ``row``; a row that cannot be decoded (damaged JSON, a value from a newer
    schema) comes back with its id, state and times only, logged, never breaking a listing."""
    try:
        return _record(row)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        log.error("scan %s: stored record cannot be decoded (%s); shown without target and verdict", row[1], e)
        seq, scan_id, request_id, _, _, _, requested_by, state, created, started, finished, attempts, digest, _ = row
        return ScanRecord(
            scan_id,
            request_id or "",
            TargetSpec("unreadable", {}),
            {},
            requested_by,
            state,
            created,
            started,
            finished,
            attempts,
            digest or "",
            None,
            seq,
        )


def _record(row: tuple[Any, ...]) -> ScanRecord:
    (
        seq,
        scan_id,
        request_id,
        kind,
        params,
        options,
        requested_by,
        state,
        created,
        started,
        finished,
        attempts,
        digest,
        verdict,
    ) = row
    body = json.loads(verdict) if verdict else None
    return ScanRecord(
        id=scan_id,
        request_id=request_id or "",
        target=TargetSpec(kind, json.loads(params)),
        options=json.loads(options),
        requested_by=requested_by,
        state=state,
        created_at=created,
        started_at=started,
        finished_at=finished,
        attempts=attempts,
        ruleset_digest=digest or "",
        verdict=verdict_from_dict(body) if body else None,
        seq=seq,
        findings_count=int(body.get("findings_count", 0)) if body else 0,
    )
