"""The fleet's event queue on a real PostgreSQL: the SQLite queue's interface, and no document
skipped when appliances commit out of ``seq`` order."""

from __future__ import annotations

import inspect
import json

import psycopg
import pytest

from scanner.outputs.pgqueue import PostgresEventQueue
from scanner.outputs.queue import EventQueue
from scanner.state.postgres import PostgresDatabase
from tests.support.postgres import PostgresServer, fresh_database, postgres

__all__ = ["postgres"]


@pytest.fixture
def db(postgres: PostgresServer) -> PostgresDatabase:
    state = PostgresDatabase(fresh_database(postgres), host="h", appliance="a")
    yield state  # type: ignore[misc]
    state.close()


def test_every_public_method_of_the_sqlite_queue_exists_with_its_parameters(db: PostgresDatabase) -> None:
    public = {n for n, _ in inspect.getmembers(EventQueue, inspect.isfunction) if not n.startswith("_")}
    for name in public:
        want = list(inspect.signature(getattr(EventQueue, name)).parameters)
        got = list(inspect.signature(getattr(PostgresEventQueue, name)).parameters)
        assert got[: len(want)] == want, name


def drain(queue: PostgresEventQueue) -> list[str]:
    """What the relay would deliver now, confirmed as it goes."""
    out = []
    while batch := queue.pending("file", 10):
        out += [json.loads(text)["n"] for _, text in batch]
        queue.delivered("file", batch[-1][0])
    return out


def test_a_document_committed_after_a_later_one_is_still_delivered(db: PostgresDatabase) -> None:
    queue = PostgresEventQueue(db, ["file"])
    queue.append([{"n": "first"}])
    with psycopg.connect(db.url) as slow:  # an appliance whose transaction takes its seq, then lingers
        slow.execute("INSERT INTO scan_events (scan_id, body) VALUES ('s', %s)", (json.dumps({"n": "slow"}),))
        queue.append([{"n": "fast"}])  # a later seq, committed first
        assert drain(queue) == ["first"], "nothing after a transaction still open is handed out"
        slow.commit()
    assert drain(queue) == ["slow", "fast"]
    assert drain(queue) == []
    assert queue.prune() == 3
    assert [s.backlog for s in queue.states()] == [0]


def test_a_new_sink_starts_at_the_oldest_document_kept(db: PostgresDatabase) -> None:
    PostgresEventQueue(db, ["file"]).append([{"n": "before"}])
    queue = PostgresEventQueue(db, ["file", "siem"])
    assert [json.loads(t)["n"] for _, t in queue.pending("siem", 10)] == ["before"]
