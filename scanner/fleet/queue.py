"""The fleet's job queue: scans in PostgreSQL, claimed per host with ``FOR UPDATE SKIP LOCKED``.

Contract:
- ``claim`` takes the oldest scan of this appliance's host that is QUEUED, INTERRUPTED, or RUNNING
  under an expired lease, and leases it to this appliance (RUNNING, ``attempts`` + 1) in one
  statement: two appliances never hold the same scan; a scan of another host is never taken.
  ``claim_next(max_attempts)`` does the same but does not count a scan already started that many
  times (it is leased only to be given up), so ``attempts`` says how often it really ran.
- A lease lasts ``lease_seconds`` from the claim or the last ``renew``; an appliance that dies
  (kill -9, host down) stops renewing, and its scans are claimable again only once it expired.
- ``request_cancel`` flags a running scan; its holder sees the flag at its next ``renew``.
- ``recover`` gives back what this appliance held in a previous life (it restarted: nothing runs).
- ``wait`` blocks until a scan for this host is committed (LISTEN on the host's channel) or
  ``timeout`` passes; a lost connection counts as a timeout and is reopened on the next call.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from scanner.state.db import ScanRecord
from scanner.state.db import _record as record_from_row
from scanner.state.postgres import COLUMNS, PostgresDatabase, channel

log = logging.getLogger(__name__)

QUALIFIED = ", ".join(f"s.{column.strip()}" for column in COLUMNS.split(","))
CLAIM = f"""
UPDATE scans AS s SET state = 'RUNNING', lease_owner = %(me)s,
    lease_until = now() + make_interval(secs => %(ttl)s), started_at = %(now)s,
    attempts = s.attempts + CASE WHEN %(cap)s > 0 AND n.attempts >= %(cap)s THEN 0 ELSE 1 END
FROM (
    SELECT seq, attempts FROM scans
    WHERE host = %(host)s AND (state IN ('QUEUED', 'INTERRUPTED')
        OR (state = 'RUNNING' AND COALESCE(lease_until, '-infinity') < now()))
    ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) AS n
WHERE s.seq = n.seq
RETURNING {QUALIFIED}, NOT (%(cap)s > 0 AND n.attempts >= %(cap)s)
"""


class JobQueue:
    """Claims, leases and wake-ups of one appliance (``db.appliance`` on ``db.host``)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        self._listener: Any = None
        self._closed = False

    def claim(self) -> ScanRecord | None:
        """Lease the next scan of our host to us; None when there is none."""
        claimed = self.claim_next()
        return claimed[0] if claimed else None

    def claim_next(self, max_attempts: int = 0) -> tuple[ScanRecord, bool] | None:
        """Lease the next scan of our host to us, with True when this claim counts as a run. A
        scan already started ``max_attempts`` times (0: no limit) is leased to us uncounted
        (False), its ``attempts`` as they were, so we can give it up: it is not run again."""
        args = {"me": self.db.appliance, "ttl": self.db.lease_seconds, "now": time.time(), "host": self.db.host}
        with self.db.connection() as conn, conn.transaction():
            row = conn.execute(CLAIM, {**args, "cap": max_attempts}).fetchone()
            if row is None:
                return None
            record = record_from_row(row[:-1])
            conn.execute("DELETE FROM findings WHERE scan_id = %s", (record.id,))
        return record, bool(row[-1])

    def renew(self, scan_ids: set[str]) -> tuple[set[str], set[str]]:
        """Extend our leases on ``scan_ids``; returns those we still hold (others were taken over)
        and, among them, those a cancel was asked for on another appliance."""
        if not scan_ids:
            return set(), set()
        with self.db.connection() as conn:
            rows = conn.execute(
                "UPDATE scans SET lease_until = now() + make_interval(secs => %s)"
                " WHERE id = ANY(%s) AND state = 'RUNNING' AND lease_owner = %s RETURNING id, cancel_requested",
                (self.db.lease_seconds, list(scan_ids), self.db.appliance),
            ).fetchall()
        return {str(r[0]) for r in rows}, {str(r[0]) for r in rows if r[1]}

    def request_cancel(self, scan_id: str) -> bool:
        """Ask the appliance running ``scan_id`` to cancel it at its next renewal; False if not running."""
        with self.db.connection() as conn:
            row = conn.execute(
                "UPDATE scans SET cancel_requested = TRUE WHERE id = %s AND state = 'RUNNING' RETURNING id",
                (scan_id,),
            ).fetchone()
        return row is not None

    def recover(self) -> int:
        """Queue again what this appliance held before it restarted; returns how many."""
        with self.db.connection() as conn:
            rows = conn.execute(
                "UPDATE scans SET state = 'QUEUED', lease_owner = NULL, lease_until = NULL"
                " WHERE lease_owner = %s AND state IN ('RUNNING', 'INTERRUPTED') RETURNING id",
                (self.db.appliance,),
            ).fetchall()
        return len(rows)

    def wait(self, timeout: float) -> bool:
        """Block until a scan for our host is committed (True) or ``timeout`` passes (False)."""
        import psycopg

        try:
            if self._closed:
                return False
            if self._listener is None or self._listener.closed:
                self._listener = psycopg.connect(self.db.url, autocommit=True, connect_timeout=10)
                self._listener.execute(f'LISTEN "{channel(self.db.host)}"')
            return any(True for _ in self._listener.notifies(timeout=timeout, stop_after=1))
        except psycopg.Error as e:
            if self._closed:
                return False  # closed under us at shutdown
            log.warning("job queue listener at %s: %s", self.db.where, e)
            self._drop()
            time.sleep(min(timeout, 1.0))  # back off before reconnecting; the caller polls anyway
            return False

    def close(self) -> None:
        """Stop listening for good (a ``wait`` in progress returns)."""
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
