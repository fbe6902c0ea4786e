"""The vCenter cursor, jobs and action outbox in the fleet's PostgreSQL: once per fleet.

Contract: the :class:`scanner.vcenter.store.VCenterStore` contract (same methods, same meaning),
shared by every appliance of the fleet, plus:
- A job belongs to the ESXi host its VM runs on (``host``, the name vCenter shows; it must be an
  appliance's ``[fleet] host``). ``open_jobs`` *claims*: it leases to this appliance the open jobs
  of its host that nobody else holds a live lease on (``FOR UPDATE SKIP LOCKED``: two appliances
  never get the same job) and returns them; a job whose holder died is claimable again once its
  lease (``lease_seconds``) expired. ``renew`` extends our leases. A job's ``lease_owner`` stays
  set when it ends: it says which appliance ran it; an action's ``applied_by``, which applied it.
- A job with no host (vCenter did not say) goes to whichever appliance claims it first.
- A job whose host has no live appliance (none registered, or none heartbeating for
  ``dead_after`` seconds) waits for one, unless ``fallback``: then any appliance claims it (its
  acquisition is a vCenter snapshot anyway, readable from anywhere). Waiting or taken over, a job
  is leased to one appliance at a time: never lost, never run by two.
- The trigger key is unique fleet-wide: two appliances that both see one event (a leadership
  hand-over) make one job. The cursor only moves forward (``GREATEST``).
- ``place(vm_uuid, host)`` records where a VM runs now in the fleet's ``placements``
  (guest ``vcenter:<instance uuid>``); ``placed(vm_uuid)`` reads it back.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from scanner.errors import NotFound
from scanner.state.postgres import PostgresDatabase
from scanner.vcenter.store import OPEN_JOB_STATES, Action, Job, NewAction, _action, _job, dry_run_rows, job_changes

JOB = (
    "seq, id, trigger_key, reason, vm_uuid, vm_name, host, state, snapshot, scan_ids, verdict, severity, notes,"
    " created_at, updated_at"
)
ACTION = (
    "seq, job_id, vm_uuid, vm_name, kind, params, state, attempts, next_at, last_error, prior, result, created_at,"
    " done_at"
)
CLAIMABLE = """
    state = ANY(%(open)s)
        AND (host IN (%(host)s, '') OR (%(fallback)s AND NOT EXISTS (
            SELECT 1 FROM appliances a WHERE a.host = vc_jobs.host AND NOT a.stopped
                AND a.heartbeat_at > now() - make_interval(secs => %(dead)s))))
        AND (lease_owner IS NULL OR lease_owner = %(me)s OR lease_until < now())
"""
CLAIM = f"""
UPDATE vc_jobs SET lease_owner = %(me)s, lease_until = now() + make_interval(secs => %(ttl)s)
WHERE seq IN (SELECT seq FROM vc_jobs WHERE {CLAIMABLE} ORDER BY seq FOR UPDATE SKIP LOCKED)
RETURNING {JOB}
"""


def vm_guest(vm_uuid: str) -> str:
    """The placement key of a vCenter VM."""
    return f"vcenter:{vm_uuid}"


class PostgresVCenterStore:
    """Blocking calls on the fleet's pool (run them off the event loop)."""

    shared = True

    def __init__(self, db: PostgresDatabase, fallback: bool = False, dead_after: float = 90.0) -> None:
        self.db = db
        self.fallback = fallback
        self.dead_after = dead_after

    def close(self) -> None:
        """Nothing of its own to close: the pool is the state's."""

    # cursor

    def cursor(self, instance: str) -> int | None:
        with self.db.connection() as conn:
            row = conn.execute("SELECT event_key FROM vc_cursor WHERE instance = %s", (instance,)).fetchone()
        return int(row[0]) if row else None

    def set_cursor(self, instance: str, event_key: int) -> None:
        with self.db.connection() as conn:
            _set_cursor(conn, instance, event_key)

    # placements

    def place(self, vm_uuid: str, host: str) -> None:
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO placements (guest, host, updated_at) VALUES (%s, %s, now())"
                " ON CONFLICT (guest) DO UPDATE SET host = EXCLUDED.host, updated_at = now()",
                (vm_guest(vm_uuid), host),
            )

    def move(self, vm_uuid: str, host: str) -> str | None:
        """Record that the VM runs on ``host``; returns the host it ran on before when this call
        moved it (one caller wins a race), None when it was new or already there."""
        guest = vm_guest(vm_uuid)
        with self.db.connection() as conn, conn.transaction():
            row = conn.execute("SELECT host FROM placements WHERE guest = %s FOR UPDATE", (guest,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO placements (guest, host, updated_at) VALUES (%s, %s, now())"
                    " ON CONFLICT (guest) DO NOTHING",
                    (guest, host),
                )
                return None
            if row[0] == host:
                return None
            conn.execute("UPDATE placements SET host = %s, updated_at = now() WHERE guest = %s", (host, guest))
        return str(row[0])

    def placed(self, vm_uuid: str) -> str:
        with self.db.connection() as conn:
            row = conn.execute("SELECT host FROM placements WHERE guest = %s", (vm_guest(vm_uuid),)).fetchone()
        return str(row[0]) if row else ""

    # jobs

    def create_job(
        self, trigger_key: str, reason: str, vm_uuid: str, vm_name: str, host: str, cursor: tuple[str, int] | None
    ) -> tuple[Job, bool]:
        now = time.time()
        with self.db.connection() as conn, conn.transaction():
            if cursor is not None:
                _set_cursor(conn, *cursor)
            row = conn.execute(
                "INSERT INTO vc_jobs (id, trigger_key, reason, vm_uuid, vm_name, host, state, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, 'QUEUED', %s, %s)"
                f" ON CONFLICT (trigger_key) DO NOTHING RETURNING {JOB}",
                (uuid.uuid4().hex, trigger_key, reason, vm_uuid, vm_name, host, now, now),
            ).fetchone()
            if row is not None:
                return _job(row), True
            row = conn.execute(f"SELECT {JOB} FROM vc_jobs WHERE trigger_key = %s", (trigger_key,)).fetchone()
        return _job(row), False

    def clears_confirmed(self, vm_uuid: str, before: float) -> int:
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM vc_actions WHERE vm_uuid = %s AND kind LIKE 'request_ack%%'"
                " AND state = 'DONE' AND done_at < %s",
                (vm_uuid, before),
            ).fetchone()
        return int(row[0])

    def _one_job(self, where: str, args: tuple[Any, ...]) -> Job | None:
        with self.db.connection() as conn:
            row = conn.execute(f"SELECT {JOB} FROM vc_jobs WHERE {where} ORDER BY seq DESC LIMIT 1", args).fetchone()
        return _job(row) if row else None

    def open_job_for(self, vm_uuid: str) -> Job | None:
        return self._one_job("vm_uuid = %s AND state = ANY(%s)", (vm_uuid, list(OPEN_JOB_STATES)))

    def last_job_for(self, vm_uuid: str) -> Job | None:
        return self._one_job("vm_uuid = %s", (vm_uuid,))

    def get_job(self, job_id: str) -> Job:
        job = self._one_job("id = %s", (job_id,))
        if job is None:
            raise NotFound(f"vCenter job {job_id} not found")
        return job

    def _claim_args(self) -> dict[str, Any]:
        me, ttl, host = self.db.appliance, self.db.lease_seconds, self.db.host
        args = {"me": me, "ttl": ttl, "open": list(OPEN_JOB_STATES), "host": host}
        return args | {"fallback": self.fallback, "dead": self.dead_after}

    def open_jobs(self) -> list[Job]:
        """Claim the open jobs of this appliance's host (see the module contract)."""
        with self.db.connection() as conn, conn.transaction():
            rows = conn.execute(CLAIM, self._claim_args()).fetchall()
        return sorted((_job(r) for r in rows), key=lambda j: j.created_at)

    def claimable(self) -> int:
        """How many open jobs ``open_jobs`` would give this appliance now (those it holds
        included), without claiming them: work for this appliance not finished yet."""
        with self.db.connection() as conn:
            row = conn.execute(f"SELECT COUNT(*) FROM vc_jobs WHERE {CLAIMABLE}", self._claim_args()).fetchone()
        return int(row[0]) if row else 0

    def renew(self, job_ids: set[str]) -> set[str]:
        """Extend our leases on ``job_ids``; returns those still ours."""
        if not job_ids:
            return set()
        with self.db.connection() as conn:
            rows = conn.execute(
                "UPDATE vc_jobs SET lease_until = now() + make_interval(secs => %s)"
                " WHERE id = ANY(%s) AND lease_owner = %s RETURNING id",
                (self.db.lease_seconds, list(job_ids), self.db.appliance),
            ).fetchall()
        return {str(r[0]) for r in rows}

    def ran_by(self, job_id: str) -> str:
        """The appliance that holds or last held the job ("" before any claimed it)."""
        with self.db.connection() as conn:
            row = conn.execute("SELECT lease_owner FROM vc_jobs WHERE id = %s", (job_id,)).fetchone()
        return str(row[0] or "") if row else ""

    def job_page(self, limit: int, before_seq: int | None = None) -> list[tuple[int, Job]]:
        sql, args = f"SELECT {JOB} FROM vc_jobs", list[object]()
        if before_seq is not None:
            sql += " WHERE seq < %s"
            args.append(before_seq)
        with self.db.connection() as conn:
            rows = conn.execute(sql + " ORDER BY seq DESC LIMIT %s", (*args, limit)).fetchall()
        return [(int(r[0]), _job(r)) for r in rows]

    def list_jobs(self, limit: int = 100) -> list[Job]:
        return [job for _, job in self.job_page(limit)]

    def update_job(self, job_id: str, **changes: Any) -> Job:
        sets, args = job_changes(changes, "%s")
        with self.db.connection() as conn:
            row = conn.execute(
                f"UPDATE vc_jobs SET {', '.join(sets)}, updated_at = %s WHERE id = %s RETURNING {JOB}",
                (*args, time.time(), job_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"vCenter job {job_id} not found")
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
        now = time.time()
        with self.db.connection() as conn, conn.transaction():
            row = conn.execute(
                "UPDATE vc_jobs SET state=%s, verdict=%s, severity=%s, notes=%s, updated_at=%s"
                f" WHERE id=%s RETURNING {JOB}",
                (state, verdict, severity, json.dumps(list(notes)), now, job_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"vCenter job {job_id} not found")
            job = _job(row)
            return _insert_actions(conn, job_id, job.vm_uuid, job.vm_name, actions, dry_run, now)

    # outbox

    def add_actions(self, job_id: str, vm_uuid: str, vm_name: str, actions: list[NewAction]) -> list[Action]:
        with self.db.connection() as conn, conn.transaction():
            return _insert_actions(conn, job_id, vm_uuid, vm_name, actions, False, time.time())

    def due_actions(self, now: float) -> list[Action]:
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT {ACTION} FROM vc_actions WHERE state = 'PENDING' ORDER BY seq").fetchall()
        return [_action(r) for r in rows]

    def next_due(self) -> float | None:
        with self.db.connection() as conn:
            row = conn.execute("SELECT MIN(next_at) FROM vc_actions WHERE state = 'PENDING'").fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def actions(self, vm_uuid: str = "", limit: int = 200, before_seq: int | None = None) -> list[Action]:
        sql, args = f"SELECT {ACTION} FROM vc_actions WHERE TRUE", list[object]()
        if vm_uuid:
            sql += " AND vm_uuid = %s"
            args.append(vm_uuid)
        if before_seq is not None:
            sql += " AND seq < %s"
            args.append(before_seq)
        with self.db.connection() as conn:
            rows = conn.execute(sql + " ORDER BY seq DESC LIMIT %s", (*args, limit)).fetchall()
        return [_action(r) for r in rows]

    def action_counts(self) -> dict[str, int]:
        with self.db.connection() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM vc_actions GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}

    def set_prior(self, seq: int, prior: Any) -> Any:
        with self.db.connection() as conn, conn.transaction():
            conn.execute("UPDATE vc_actions SET prior = %s WHERE seq = %s AND prior IS NULL", (json.dumps(prior), seq))
            row = conn.execute("SELECT prior FROM vc_actions WHERE seq = %s", (seq,)).fetchone()
        return json.loads(row[0])

    def action_done(self, seq: int, state: str, result: str) -> None:
        with self.db.connection() as conn:
            conn.execute(
                "UPDATE vc_actions SET state=%s, result=%s, done_at=%s, attempts=attempts+1, last_error='',"
                " applied_by=%s WHERE seq=%s AND state='PENDING'",
                (state, result, time.time(), self.db.appliance, seq),
            )

    def action_failed(self, seq: int, error: str, next_at: float, give_up: str = "") -> None:
        with self.db.connection() as conn:
            if give_up:
                conn.execute(
                    "UPDATE vc_actions SET state='FAILED', attempts=attempts+1, last_error=%s, result=%s, done_at=%s"
                    " WHERE seq=%s AND state='PENDING'",
                    (error[:500], give_up[:500], time.time(), seq),
                )
                return
            conn.execute(
                "UPDATE vc_actions SET attempts=attempts+1, last_error=%s, next_at=%s WHERE seq=%s",
                (error[:500], next_at, seq),
            )

    def mark_reverted(self, seqs: list[int]) -> None:
        with self.db.connection() as conn:
            conn.execute("UPDATE vc_actions SET state='REVERTED' WHERE seq = ANY(%s) AND state='DONE'", (seqs,))


def _set_cursor(conn: Any, instance: str, event_key: int) -> None:
    conn.execute(
        "INSERT INTO vc_cursor (instance, event_key, updated_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (instance) DO UPDATE SET event_key = GREATEST(vc_cursor.event_key, EXCLUDED.event_key),"
        " updated_at = EXCLUDED.updated_at",
        (instance, event_key, time.time()),
    )


def _insert_actions(
    conn: Any, job_id: str, vm_uuid: str, vm_name: str, actions: list[NewAction], dry_run: bool, now: float
) -> list[Action]:
    rows = dry_run_rows(job_id, vm_uuid, vm_name, actions, dry_run, now)
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO vc_actions (job_id, vm_uuid, vm_name, kind, params, state, result, next_at, created_at,"
                " done_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (job_id, kind) DO NOTHING",
                rows,
            )
    found = conn.execute(f"SELECT {ACTION} FROM vc_actions WHERE job_id = %s ORDER BY seq", (job_id,)).fetchall()
    return [_action(r) for r in found]
