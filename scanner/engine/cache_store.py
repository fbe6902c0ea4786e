"""Where the result cache keeps its entries: one SQLite file (one appliance) or PostgreSQL (a fleet).

Contract of an :class:`EntryStore`: ``key -> (value, size, used)`` rows and one shared random
``seed``. ``put`` replaces and returns the size it replaced; ``evict(target)`` deletes least
recently ``used`` rows until at most ``target`` bytes remain, by the store's own totals, and
returns the bytes left. Stores are called under the cache's lock (one caller at a time per
process); a PostgreSQL store is shared by many appliances, so its totals are read from the
database, never only counted locally, and its statements are each atomic on their own.
"""

from __future__ import annotations

import abc
import os
import sqlite3
from pathlib import Path
from typing import Any

from scanner.errors import Unavailable


class EntryStore(abc.ABC):
    """Rows of the result cache (see the module contract)."""

    where: str

    @abc.abstractmethod
    def seed(self) -> int:
        """The cache's random 64-bit seed, made once by whoever came first."""

    @abc.abstractmethod
    def get(self, key: bytes) -> bytes | None: ...

    @abc.abstractmethod
    def put(self, key: bytes, value: bytes, size: int, used: int) -> int:
        """Store a row; returns the size of the row it replaced (0 if none)."""

    @abc.abstractmethod
    def touch(self, rows: list[tuple[int, bytes]]) -> None:
        """Set ``used`` of the keys in ``(used, key)`` rows, in one transaction."""

    @abc.abstractmethod
    def totals(self) -> tuple[int, int, int]:
        """Rows, bytes, and the largest ``used`` stored."""

    @abc.abstractmethod
    def evict(self, target: int) -> int:
        """Drop least recently used rows until at most ``target`` bytes remain; the bytes left."""

    @abc.abstractmethod
    def close(self) -> None: ...


class SqliteEntries(EntryStore):
    """One SQLite file (WAL, ``synchronous=NORMAL``): a lost last transaction only costs a rescan."""

    def __init__(self, path: Path) -> None:
        self.where = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS entries (key BLOB PRIMARY KEY, value BLOB NOT NULL,"
                " size INTEGER NOT NULL, used INTEGER NOT NULL) WITHOUT ROWID"
            )
            db.execute("CREATE INDEX IF NOT EXISTS entries_used ON entries (used)")
        except sqlite3.DatabaseError:
            db.close()
            raise
        self._db = db

    def seed(self) -> int:
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('seed', ?)", (os.urandom(8),))
        row = self._db.execute("SELECT v FROM meta WHERE k = 'seed'").fetchone()
        return int.from_bytes(row[0], "little")

    def get(self, key: bytes) -> bytes | None:
        row = self._db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, key: bytes, value: bytes, size: int, used: int) -> int:
        old = self._db.execute("SELECT size FROM entries WHERE key = ?", (key,)).fetchone()
        self._db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)", (key, value, size, used))
        return int(old[0]) if old else 0

    def touch(self, rows: list[tuple[int, bytes]]) -> None:
        with self._transaction():
            self._db.executemany("UPDATE entries SET used = ? WHERE key = ?", rows)

    def totals(self) -> tuple[int, int, int]:
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(used), 0) FROM entries")
        count, size, used = row.fetchone()
        return int(count), int(size), int(used)

    def evict(self, target: int) -> int:
        left = self.totals()[1]
        with self._transaction():
            while left > target:
                rows = self._db.execute("SELECT key, size FROM entries ORDER BY used LIMIT 256").fetchall()
                if not rows:
                    break
                for key, size in rows:
                    if left <= target:
                        break
                    self._db.execute("DELETE FROM entries WHERE key = ?", (key,))
                    left -= size
        return left

    def _transaction(self) -> Any:
        db = self._db

        class _Tx:
            def __enter__(self) -> None:
                db.execute("BEGIN")

            def __exit__(self, kind: object, *rest: object) -> None:
                db.execute("COMMIT" if kind is None else "ROLLBACK")

        return _Tx()

    def close(self) -> None:
        self._db.close()


POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS avscan_cache_meta (k TEXT PRIMARY KEY, v BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS avscan_cache_entries (
    key BYTEA PRIMARY KEY, value BYTEA NOT NULL, size BIGINT NOT NULL, used BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS avscan_cache_entries_used ON avscan_cache_entries (used);
"""


class PostgresEntries(EntryStore):
    """The fleet's shared cache in PostgreSQL (psycopg 3, autocommit: each statement atomic).

    A clone of a golden image scanned by one appliance is a hit on every other. The schema is
    created if absent (its own ``avscan_cache_*`` tables; nothing else in the database is
    touched). Eviction deletes by the database's own LRU order, so appliances evicting at the same
    time only delete what is oldest for all of them.
    """

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as e:
            raise Unavailable(f"unavailable: install psycopg for a PostgreSQL cache ({e})") from e
        self.where = _redacted(url)
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=10)
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(7355608)")  # one schema creator at a time
                for statement in POSTGRES_SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
        except psycopg.Error as e:
            raise Unavailable(f"result cache at {self.where}: {e}") from e

    def seed(self) -> int:
        self._db.execute(
            "INSERT INTO avscan_cache_meta VALUES ('seed', %s) ON CONFLICT (k) DO NOTHING", (os.urandom(8),)
        )
        row = self._db.execute("SELECT v FROM avscan_cache_meta WHERE k = 'seed'").fetchone()
        assert row is not None
        return int.from_bytes(bytes(row[0]), "little")

    def get(self, key: bytes) -> bytes | None:
        row = self._db.execute("SELECT value FROM avscan_cache_entries WHERE key = %s", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, key: bytes, value: bytes, size: int, used: int) -> int:
        row = self._db.execute(
            "WITH old AS (SELECT size FROM avscan_cache_entries WHERE key = %(k)s) "
            "INSERT INTO avscan_cache_entries AS e VALUES (%(k)s, %(v)s, %(s)s, %(u)s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, size = EXCLUDED.size, used = EXCLUDED.used "
            "RETURNING (SELECT size FROM old)",
            {"k": key, "v": value, "s": size, "u": used},
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def touch(self, rows: list[tuple[int, bytes]]) -> None:
        with self._db.transaction(), self._db.cursor() as cur:
            cur.executemany("UPDATE avscan_cache_entries SET used = GREATEST(used, %s) WHERE key = %s", rows)

    def totals(self) -> tuple[int, int, int]:
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(used), 0) FROM avscan_cache_entries"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    def evict(self, target: int) -> int:
        left = self.totals()[1]
        while left > target:
            row = self._db.execute(
                "WITH gone AS (DELETE FROM avscan_cache_entries WHERE key IN "
                "(SELECT key FROM avscan_cache_entries ORDER BY used LIMIT 256 FOR UPDATE SKIP LOCKED) "
                "RETURNING size) SELECT COUNT(*), COALESCE(SUM(size), 0) FROM gone"
            ).fetchone()
            if row is None or not row[0]:
                break
            left -= int(row[1])
        return left

    def close(self) -> None:
        self._db.close()


def _redacted(url: str) -> str:
    """The URL without a password, for messages."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, user = head.partition("//")
    return f"{scheme}//{user.split(':', 1)[0]}:***@{tail}"
