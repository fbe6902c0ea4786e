"""The PostgreSQL state on a real server: same interface as SQLite, versioned schema, restarts."""

from __future__ import annotations

import inspect
import threading

import psycopg
import pytest

from scanner.errors import Unavailable
from scanner.state.db import Database
from scanner.state.migrations import MIGRATIONS
from scanner.state.postgres import PostgresDatabase
from scanner.targets import TargetSpec
from tests.support.postgres import PostgresServer, fresh_database, postgres

__all__ = ["postgres"]
SPEC = TargetSpec("files", {"paths": ["/srv/data"]})


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    return fresh_database(postgres)


def test_every_public_method_of_the_sqlite_state_exists_with_its_parameters(url: str) -> None:
    public = {n for n, _ in inspect.getmembers(Database, inspect.isfunction) if not n.startswith("_")}
    for name in public:
        want = list(inspect.signature(getattr(Database, name)).parameters)
        got = list(inspect.signature(getattr(PostgresDatabase, name)).parameters)
        assert got[: len(want)] == want, name


def test_the_schema_is_versioned_and_migrated_once(url: str) -> None:
    PostgresDatabase(url, host="h").close()
    PostgresDatabase(url, host="h").close()  # a second appliance: nothing to do
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]


def test_a_database_migrated_by_a_newer_appliance_is_refused(url: str) -> None:
    PostgresDatabase(url, host="h").close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version, description) VALUES (99, 'from the future')")
    newest = MIGRATIONS[-1].version
    with pytest.raises(Unavailable, match=rf"schema version 99 is newer than this appliance knows \({newest}\)"):
        PostgresDatabase(url, host="h")


def test_an_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(Unavailable, match=r"postgresql://postgres@127.0.0.1:1/x"):
        PostgresDatabase("postgresql://postgres@127.0.0.1:1/x", host="h")


def test_a_postgres_restart_mid_load_loses_no_acknowledged_scan(url: str, postgres: PostgresServer) -> None:
    """Writers keep submitting through a restart: every id returned is there afterwards."""
    db = PostgresDatabase(url, host="h")
    acknowledged: list[str] = []
    refused: list[str] = []
    after_restart = threading.Event()
    enough = threading.Event()

    def writer() -> None:
        while not enough.is_set():
            try:
                acknowledged.append(db.create_scan(SPEC, {}, "load")[0].id)
            except Unavailable as e:
                refused.append(e.message)
            if after_restart.is_set() and len(acknowledged) >= before + 20:
                enough.set()

    before = 0
    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        while len(acknowledged) < 30:
            threading.Event().wait(0.01)
        before = len(acknowledged)
        postgres.restart()
        after_restart.set()
        assert enough.wait(60), "no scans acknowledged after the restart"
    finally:
        enough.set()
        for t in threads:
            t.join()
    stored = {r.id for r in db.list_scans(100_000, None, None)}
    db.close()
    assert set(acknowledged) <= stored
    assert all("state at postgresql://" in m for m in refused)


def test_a_database_of_an_older_appliance_is_upgraded_in_place(url: str) -> None:
    """Version 2 (before cancel flags and events) with a scan in it: opening applies 3 and 4 and keeps the scan."""
    db = PostgresDatabase(url, host="h")
    record, _ = db.create_scan(SPEC, {}, "old")
    db.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE scans DROP COLUMN cancel_requested")
        conn.execute("DROP TABLE scan_events")
        conn.execute("DROP TABLE IF EXISTS vc_cursor, vc_jobs, vc_actions, event_cursors")  # 6 and 7
        conn.execute("DELETE FROM schema_version WHERE version >= 3")
    upgraded = PostgresDatabase(url, host="h")
    try:
        assert upgraded.get_scan(record.id).requested_by == "old"
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (MIGRATIONS[-1].version,)
            assert conn.execute("SELECT cancel_requested FROM scans").fetchall() == [(False,)]
    finally:
        upgraded.close()


def test_events_and_state_counts_are_committed_with_the_final_state(url: str) -> None:
    db = PostgresDatabase(url, host="h")
    try:
        done, _ = db.create_scan(SPEC, {}, "soc")
        db.create_scan(SPEC, {}, "soc")
        db.finish_scan(done.id, "DONE", None, [{"event": {"kind": "alert"}, "n": 1}])
        assert db.state_counts() == {"DONE": 1, "QUEUED": 1}
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT scan_id, body FROM scan_events").fetchall()
        assert rows == [(done.id, '{"event": {"kind": "alert"}, "n": 1}')]
    finally:
        db.close()
