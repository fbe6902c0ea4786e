"""The event queue of a fleet: ECS documents in PostgreSQL's ``scan_events``, one cursor per sink.

Contract: the :class:`scanner.outputs.queue.EventQueue` contract (same methods), shared by the
fleet, plus:
- A scan's documents commit with its final state (``PostgresDatabase.finish_scan``); vCenter
  action documents are appended on their own (``append``). Each row carries the id of the
  transaction that wrote it (``tx``).
- A sink's cursor is a position in ``(tx, seq)`` order, and ``pending`` only returns rows whose
  transaction is older than every transaction still running (``pg_snapshot_xmin``): a row that
  commits later always sorts after the cursor, so concurrent appliances committing out of ``seq``
  order never make a sink skip a document. (A transaction left open anywhere in the cluster holds
  delivery back until it ends.)
- The cursor row is the fleet's: whichever appliance relays a sink (one at a time,
  :class:`scanner.fleet.leadership.Leadership`) continues where the previous one confirmed, so an
  appliance killed mid-batch makes the next one redeliver that batch (at least once, never lost;
  ``event.id`` is stable, so a receiver can drop the repeat).
- ``prune`` deletes what every sink of the fleet (every cursor row) has delivered.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scanner.outputs.ecs import to_json
from scanner.outputs.queue import SinkState
from scanner.state.postgres import PostgresDatabase

SAFE = "e.tx < pg_snapshot_xmin(pg_current_snapshot())"


class PostgresEventQueue:
    """Per-sink cursors over ``scan_events``; blocking calls on the state's pool."""

    def __init__(self, db: PostgresDatabase, sinks: Sequence[str]) -> None:
        self.db = db
        self.sinks = tuple(sinks)
        with self.db.connection() as conn, conn.transaction():
            for sink in self.sinks:  # a new sink starts at the oldest event kept
                conn.execute("INSERT INTO event_cursors (sink) VALUES (%s) ON CONFLICT (sink) DO NOTHING", (sink,))

    def close(self) -> None:
        """Nothing of its own to close: the pool is the state's."""

    def append(self, docs: Iterable[Mapping[str, Any]]) -> None:
        rows = [("", to_json(doc)) for doc in docs]
        with self.db.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany("INSERT INTO scan_events (scan_id, body) VALUES (%s, %s)", rows)

    def pending(self, sink: str, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (seq, document as compact JSON) after ``sink``'s cursor, in cursor order."""
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT e.seq, e.body FROM scan_events e JOIN event_cursors c ON c.sink = %s"
                f" WHERE (e.tx, e.seq) > (c.tx, c.seq) AND {SAFE} ORDER BY e.tx, e.seq LIMIT %s",
                (sink, limit),
            ).fetchall()
        return [(int(seq), _compact(body)) for seq, body in rows]

    def delivered(self, sink: str, upto: int) -> None:
        """Move ``sink``'s cursor to the row ``upto`` (never back)."""
        with self.db.connection() as conn:
            conn.execute(
                "UPDATE event_cursors c SET tx = e.tx, seq = e.seq, attempts = 0, next_at = 0, last_error = ''"
                " FROM scan_events e WHERE c.sink = %s AND e.seq = %s AND (e.tx, e.seq) > (c.tx, c.seq)",
                (sink, upto),
            )

    def failed(self, sink: str, error: str, next_at: float) -> int:
        with self.db.connection() as conn:
            row = conn.execute(
                "UPDATE event_cursors SET attempts = attempts + 1, next_at = %s, last_error = %s WHERE sink = %s"
                " RETURNING attempts",
                (next_at, error[:500], sink),
            ).fetchone()
        return int(row[0]) if row else 1

    def states(self) -> list[SinkState]:
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT c.sink, c.seq, (SELECT COUNT(*) FROM scan_events e WHERE (e.tx, e.seq) > (c.tx, c.seq)),"
                " c.attempts, c.next_at, c.last_error FROM event_cursors c WHERE c.sink = ANY(%s) ORDER BY c.sink",
                (list(self.sinks),),
            ).fetchall()
        return [SinkState(str(r[0]), int(r[1]), int(r[2]), int(r[3]), float(r[4]), str(r[5])) for r in rows]

    def prune(self) -> int:
        """Delete the events every sink of the fleet has delivered; returns how many."""
        with self.db.connection() as conn:
            row = conn.execute(
                "WITH low AS (SELECT tx, seq FROM event_cursors ORDER BY tx, seq LIMIT 1)"
                " DELETE FROM scan_events e USING low WHERE (e.tx, e.seq) <= (low.tx, low.seq) RETURNING 1"
            ).fetchall()
        return len(row)


def _compact(body: str) -> str:
    """A stored document as the compact JSON sinks get (``finish_scan`` stores it sorted)."""
    return to_json(json.loads(body))
