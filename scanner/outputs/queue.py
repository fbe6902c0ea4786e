"""The durable event queue: ECS documents wait in SQLite until every configured sink took them.

Contract:
- ``EVENTS_SCHEMA`` lives in the service's state database, so a scan's final state and its
  documents commit in one transaction (``append_in``): a crash never keeps one without the other.
- Each sink has its own cursor (the last ``seq`` it delivered). A sink reads ``pending`` after its
  cursor in order; ``delivered`` moves the cursor only after the sink confirmed, so a crash or an
  outage redelivers (at-least-once, never lost). ``failed`` records the error and when to retry.
- ``prune`` deletes what every sink has delivered. A sink added later starts at the oldest kept event.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.outputs.ecs import to_json
from scanner.state.sqlite import SqliteStore

EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS event_cursors (
    sink TEXT PRIMARY KEY,
    delivered INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True)
class SinkState:
    sink: str
    delivered: int
    backlog: int
    attempts: int
    next_at: float
    last_error: str


def append_in(c: sqlite3.Connection, docs: Iterable[Mapping[str, Any]]) -> None:
    """Queue ``docs`` inside the caller's transaction."""
    now = time.time()
    c.executemany(
        "INSERT INTO events (at, body) VALUES (?, ?)",
        [(now, to_json(doc)) for doc in docs],
    )


class EventQueue(SqliteStore):
    """Per-sink cursors over the ``events`` table of ``path`` (the state database)."""

    def __init__(self, path: Path, sinks: Sequence[str]) -> None:
        super().__init__(path, EVENTS_SCHEMA)
        self.sinks = tuple(sinks)
        with self._tx() as c:
            first = c.execute(
                "SELECT COALESCE(MIN(seq) - 1, (SELECT COALESCE(MAX(seq), 0) FROM events)) FROM events"
            ).fetchone()[0]
            for sink in self.sinks:
                c.execute("INSERT OR IGNORE INTO event_cursors (sink, delivered) VALUES (?, ?)", (sink, first))

    def append(self, docs: Iterable[Mapping[str, Any]]) -> None:
        with self._tx() as c:
            append_in(c, docs)

    def pending(self, sink: str, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (seq, document as compact JSON) after ``sink``'s cursor, in order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, body FROM events WHERE seq > (SELECT delivered FROM event_cursors WHERE sink = ?)"
                " ORDER BY seq LIMIT ?",
                (sink, limit),
            ).fetchall()
        return [(int(seq), str(body)) for seq, body in rows]

    def delivered(self, sink: str, upto: int) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE event_cursors SET delivered = MAX(delivered, ?), attempts = 0, next_at = 0, last_error = ''"
                " WHERE sink = ?",
                (upto, sink),
            )

    def failed(self, sink: str, error: str, next_at: float) -> int:
        """Record a failed delivery; returns the number of consecutive failures."""
        with self._tx() as c:
            c.execute(
                "UPDATE event_cursors SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE sink = ?",
                (next_at, error[:500], sink),
            )
            return int(c.execute("SELECT attempts FROM event_cursors WHERE sink = ?", (sink,)).fetchone()[0])

    def states(self) -> list[SinkState]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT sink, delivered, (SELECT COUNT(*) FROM events WHERE seq > delivered), attempts, next_at,"
                " last_error FROM event_cursors ORDER BY sink"
            ).fetchall()
        return [SinkState(*r) for r in rows if r[0] in self.sinks]

    def prune(self) -> int:
        """Delete events every configured sink has delivered; returns how many."""
        if not self.sinks:
            return 0
        marks = ",".join("?" * len(self.sinks))
        with self._tx() as c:
            low = c.execute(
                f"SELECT MIN(delivered) FROM event_cursors WHERE sink IN ({marks})",  # noqa: S608 - placeholders only
                self.sinks,
            ).fetchone()[0]
            return c.execute("DELETE FROM events WHERE seq <= ?", (low or 0,)).rowcount
