"""Durable state in PostgreSQL, shared by a fleet of appliances: the interface of ``Database``.

Contract (the same as the SQLite :class:`scanner.state.db.Database`, plus the fleet's part):
- A scan row is committed before its id is returned: an acknowledged scan survives a crash of
  the appliance or a restart of PostgreSQL. A call interrupted by a lost connection raises
  :class:`Unavailable` and acknowledged nothing; the pool reconnects for the next call.
- Every scan carries the ``host`` it must run on (default: this appliance's host) and, while it
  runs, a lease (``lease_owner``, ``lease_until``). ``resumable`` lists this host's unfinished
  scans except those leased by another live appliance; ``mark_running`` takes the lease;
  ``finish_scan`` is fenced: an appliance whose lease was taken over records nothing.
- Committing a scan notifies the channel of its host (:func:`channel`), so that host's idle
  appliances wake at once; no other appliance is woken.
- The schema is versioned (:mod:`scanner.state.migrations`) and migrated on open.
Calls block and are thread-safe (a connection pool): async code runs them off the event loop.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from scanner.engine.cache_store import _redacted
from scanner.errors import NotFound, Unavailable
from scanner.state.codec import finding_from_dict, finding_to_dict, verdict_to_dict
from scanner.state.db import RESUMABLE, AuditRecord, ScanRecord
from scanner.state.db import _record as record_from_row
from scanner.state.migrations import migrate
from scanner.targets.base import TargetSpec
from scanner.verdicts import Finding, Verdict

COLUMNS = (
    "seq, id, request_id, target_kind, target_params, options, requested_by, state, created_at,"
    " started_at, finished_at, attempts, ruleset_digest, verdict"
)


def channel(host: str) -> str:
    """The NOTIFY channel of one host's jobs: only that host's appliances are woken."""
    return "avscan_jobs_" + hashlib.sha256(host.encode()).hexdigest()[:24]


class PostgresDatabase:
    """The state of one appliance of a fleet (``appliance``, on hypervisor ``host``) in PostgreSQL."""

    def __init__(self, url: str, host: str = "", appliance: str = "", lease_seconds: float = 30.0) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as e:
            raise Unavailable(f"unavailable: install psycopg and psycopg-pool for PostgreSQL state ({e})") from e
        self.url = url
        self.where = _redacted(url)
        self.host = host or socket.gethostname()
        self.appliance = appliance or self.host
        self.lease_seconds = lease_seconds
        self._errors = psycopg.Error
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=4,
            kwargs={"autocommit": True, "connect_timeout": 10},
            check=ConnectionPool.check_connection,
            open=False,
            name=f"avscan-state-{self.appliance}",
        )
        try:  # one direct connection first: a wrong URL fails now, with its reason
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                migrate(conn, self.where)
        except psycopg.Error as e:
            raise Unavailable(f"state at {self.where}: {str(e).strip()}") from e
        self._pool.open(wait=False)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled autocommit connection; driver and pool errors become :class:`Unavailable`."""
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as conn:
                yield conn
        except (self._errors, PoolTimeout) as e:
            raise Unavailable(f"state at {self.where}: {str(e).strip() or type(e).__name__}") from e

    def close(self) -> None:
        self._pool.close()

    # scans

    def create_scan(
        self, target: TargetSpec, options: dict[str, Any], requested_by: str, request_id: str = "", host: str = ""
    ) -> tuple[ScanRecord, bool]:
        """Insert a QUEUED scan for ``host`` (default: ours); a known ``request_id`` returns the existing one."""
        row = (
            uuid.uuid4().hex,
            request_id or None,
            target.kind,
            json.dumps(dict(target.params)),
            json.dumps(options),
            requested_by,
            time.time(),
            host or self.host,
        )
        with self.connection() as conn, conn.transaction():
            inserted = conn.execute(
                "INSERT INTO scans (id, request_id, target_kind, target_params, options, requested_by, state,"
                " created_at, host) VALUES (%s, %s, %s, %s, %s, %s, 'QUEUED', %s, %s)"
                f" ON CONFLICT (request_id) DO NOTHING RETURNING {COLUMNS}",
                row,
            ).fetchone()
            if inserted is not None:
                conn.execute("SELECT pg_notify(%s, '')", (channel(host or self.host),))
                return record_from_row(inserted), True
            existing = conn.execute(f"SELECT {COLUMNS} FROM scans WHERE request_id = %s", (request_id,)).fetchone()
        assert existing is not None
        return record_from_row(existing), False

    def get_scan(self, scan_id: str) -> ScanRecord:
        with self.connection() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM scans WHERE id = %s", (scan_id,)).fetchone()
        if row is None:
            raise NotFound(f"scan {scan_id} not found")
        return record_from_row(row)

    def host_of(self, scan_id: str) -> str:
        """The host a scan must run on."""
        with self.connection() as conn:
            row = conn.execute("SELECT host FROM scans WHERE id = %s", (scan_id,)).fetchone()
        if row is None:
            raise NotFound(f"scan {scan_id} not found")
        return str(row[0])

    def list_scans(self, limit: int, before_seq: int | None, state: str | None) -> list[ScanRecord]:
        sql = f"SELECT {COLUMNS} FROM scans WHERE TRUE"
        args: list[object] = []
        if before_seq is not None:
            sql += " AND seq < %s"
            args.append(before_seq)
        if state:
            sql += " AND state = %s"
            args.append(state)
        sql += " ORDER BY seq DESC LIMIT %s"
        args.append(limit)
        with self.connection() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [record_from_row(r) for r in rows]

    def state_counts(self) -> dict[str, int]:
        """How many scans of the whole fleet are in each state (metrics)."""
        with self.connection() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM scans GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}

    def resumable(self) -> list[ScanRecord]:
        """This host's unfinished scans, except those another appliance holds a live lease on."""
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM scans WHERE state = ANY(%s) AND host = %s AND NOT (state = 'RUNNING'"
                " AND lease_owner IS DISTINCT FROM %s AND lease_until > now()) ORDER BY seq",
                (list(RESUMABLE), self.host, self.appliance),
            ).fetchall()
        return [record_from_row(r) for r in rows]

    def mark_running(self, scan_id: str, ruleset_digest: str) -> bool:
        """QUEUED -> RUNNING under our lease (or set the digest of a scan we hold); False otherwise."""
        with self.connection() as conn, conn.transaction():
            updated = conn.execute(
                "UPDATE scans SET state = 'RUNNING', ruleset_digest = %s, lease_owner = %s,"
                " lease_until = now() + make_interval(secs => %s),"
                " started_at = CASE WHEN state = 'QUEUED' THEN %s ELSE started_at END,"
                " attempts = attempts + CASE WHEN state = 'QUEUED' THEN 1 ELSE 0 END"
                " WHERE id = %s AND (state = 'QUEUED' OR (state = 'RUNNING' AND lease_owner = %s))"
                " RETURNING attempts",
                (ruleset_digest, self.appliance, self.lease_seconds, time.time(), scan_id, self.appliance),
            ).fetchone()
            if updated is not None:
                conn.execute("DELETE FROM findings WHERE scan_id = %s", (scan_id,))
        return updated is not None

    def find_request(self, request_id: str) -> ScanRecord | None:
        """The scan started for an idempotency key, if any."""
        with self.connection() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM scans WHERE request_id = %s", (request_id,)).fetchone()
        return record_from_row(row) if row else None

    def set_state(self, scan_id: str, state: str) -> None:
        """Set the state; QUEUED also drops the lease (the scan is up for claiming again)."""
        with self.connection() as conn, conn.transaction():
            conn.execute(
                "UPDATE scans SET state = %s, lease_owner = CASE WHEN %s = 'QUEUED' THEN NULL ELSE lease_owner END"
                " WHERE id = %s",
                (state, state, scan_id),
            )
            row = conn.execute("SELECT host FROM scans WHERE id = %s", (scan_id,)).fetchone()
            if state == "QUEUED" and row is not None:
                conn.execute("SELECT pg_notify(%s, '')", (channel(str(row[0])),))

    def finish_scan(
        self, scan_id: str, state: str, verdict: Verdict | None, events: Sequence[Mapping[str, Any]] = ()
    ) -> bool:
        """Record the final state, verdict, findings and the scan's outgoing ``events`` (documents
        for event sinks, in ``scan_events``; no relay reads that table yet) in one transaction,
        unless another appliance holds the scan's lease (ours expired and it took the scan over):
        then nothing, and False."""
        body = json.dumps(verdict_to_dict(verdict)) if verdict else None
        with self.connection() as conn, conn.transaction():
            row = conn.execute(
                "UPDATE scans SET state = %s, finished_at = %s, verdict = %s, lease_owner = NULL, lease_until = NULL"
                " WHERE id = %s AND (lease_owner IS NULL OR lease_owner = %s) RETURNING seq",
                (state, time.time(), body, scan_id, self.appliance),
            ).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM findings WHERE scan_id = %s", (scan_id,))
            if verdict:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO findings (scan_id, seq, body) VALUES (%s, %s, %s)",
                        [(scan_id, i, json.dumps(finding_to_dict(f))) for i, f in enumerate(verdict.findings)],
                    )
            if events:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO scan_events (scan_id, body) VALUES (%s, %s)",
                        [(scan_id, json.dumps(dict(e), sort_keys=True)) for e in events],
                    )
        return True

    def findings(self, scan_id: str, offset: int = 0, limit: int = 1_000_000) -> list[Finding]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT body FROM findings WHERE scan_id = %s AND seq >= %s ORDER BY seq LIMIT %s",
                (scan_id, offset, limit),
            ).fetchall()
        return [finding_from_dict(json.loads(r[0])) for r in rows]

    # audit

    def audit(self, actor: str, action: str, subject: str, detail: str = "") -> None:
        with self.connection() as conn:
            conn.execute(
                "INSERT INTO audit (at, actor, action, subject, detail) VALUES (%s, %s, %s, %s, %s)",
                (time.time(), actor, action, subject, detail),
            )

    def audit_log(self, limit: int = 100) -> list[AuditRecord]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT at, actor, action, subject, detail FROM audit ORDER BY seq DESC LIMIT %s", (limit,)
            ).fetchall()
        return [AuditRecord(*r) for r in rows]
