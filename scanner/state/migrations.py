"""Versioned schema migrations for the PostgreSQL state, applied once per database.

Contract: ``MIGRATIONS`` is an append-only list of numbered steps (never edit a released step;
add the next number). :func:`migrate` applies, in one transaction under an advisory lock (many
appliances start at once; one migrates, the others wait and find nothing to do), every step above
the version recorded in ``schema_version``, and records each. A database migrated by a newer
appliance (a version this code does not know) is refused with a clear error, not written to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scanner.errors import Unavailable

LOCK_KEY = 7355609  # pg_advisory_xact_lock key for the state schema (the cache uses 7355608)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "scans, findings, audit (the SQLite state's tables)",
        """
        CREATE TABLE scans (
            seq BIGSERIAL PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            request_id TEXT UNIQUE,
            target_kind TEXT NOT NULL,
            target_params TEXT NOT NULL,
            options TEXT NOT NULL,
            requested_by TEXT NOT NULL,
            state TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            started_at DOUBLE PRECISION,
            finished_at DOUBLE PRECISION,
            attempts INTEGER NOT NULL DEFAULT 0,
            ruleset_digest TEXT,
            verdict TEXT
        );
        CREATE INDEX scans_state ON scans (state);
        CREATE TABLE findings (
            scan_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (scan_id, seq)
        );
        CREATE TABLE audit (
            seq BIGSERIAL PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT NOT NULL,
            detail TEXT NOT NULL
        );
        """,
    ),
    Migration(
        2,
        "the fleet: jobs carry their host and a lease; appliances; guest placements",
        """
        ALTER TABLE scans ADD COLUMN host TEXT NOT NULL DEFAULT '';
        ALTER TABLE scans ADD COLUMN lease_owner TEXT;
        ALTER TABLE scans ADD COLUMN lease_until TIMESTAMPTZ;
        CREATE INDEX scans_claimable ON scans (host, seq) WHERE state IN ('QUEUED', 'INTERRUPTED', 'RUNNING');
        CREATE TABLE appliances (
            name TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            started_at TIMESTAMPTZ NOT NULL,
            heartbeat_at TIMESTAMPTZ NOT NULL,
            running INTEGER NOT NULL DEFAULT 0,
            ruleset_digest TEXT NOT NULL DEFAULT '',
            stopped BOOLEAN NOT NULL DEFAULT FALSE
        );
        CREATE TABLE placements (
            guest TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "a cancel asked on one appliance reaches the appliance running the scan",
        "ALTER TABLE scans ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE",
    ),
    Migration(
        4,
        "the outgoing event documents of a scan, committed with its final state",
        """
        CREATE TABLE scan_events (
            seq BIGSERIAL PRIMARY KEY,
            scan_id TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """,
    ),
    Migration(
        5,
        "signatures once for the fleet: rulesets and their sources, validations, the active pointer"
        " with its history, and which ruleset each appliance runs",
        """
        CREATE SEQUENCE ruleset_versions;
        CREATE TABLE rulesets (
            digest TEXT PRIMARY KEY,
            version BIGINT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            description TEXT NOT NULL,
            pushed_by TEXT NOT NULL,
            pushed_at DOUBLE PRECISION NOT NULL,
            pushed_on TEXT NOT NULL,
            rule_count INTEGER NOT NULL,
            warnings TEXT NOT NULL,
            signature TEXT,
            force_slow_rules BOOLEAN NOT NULL DEFAULT FALSE
        );
        CREATE TABLE ruleset_files (
            digest TEXT NOT NULL REFERENCES rulesets (digest),
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            data BYTEA NOT NULL,
            PRIMARY KEY (digest, path)
        );
        CREATE TABLE ruleset_validations (
            seq BIGSERIAL PRIMARY KEY,
            digest TEXT NOT NULL,
            appliance TEXT NOT NULL,
            actor TEXT NOT NULL,
            ok BOOLEAN NOT NULL,
            diagnostics TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE ruleset_pointer (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            generation BIGINT NOT NULL,
            doc TEXT NOT NULL
        );
        CREATE TABLE ruleset_activations (
            generation BIGINT PRIMARY KEY,
            action TEXT NOT NULL,
            digest TEXT NOT NULL,
            version BIGINT NOT NULL,
            actor TEXT NOT NULL,
            appliance TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE ruleset_status (
            appliance TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            digest TEXT NOT NULL,
            wanted_digest TEXT NOT NULL,
            generation BIGINT NOT NULL,
            error TEXT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        )
        """,
    ),
    Migration(
        6,
        "the vCenter cursor, jobs and action outbox, once per fleet (jobs leased to their host's appliance)",
        """
        CREATE TABLE vc_cursor (
            instance TEXT PRIMARY KEY,
            event_key BIGINT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        );
        CREATE TABLE vc_jobs (
            seq BIGSERIAL PRIMARY KEY,
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
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            lease_owner TEXT,
            lease_until TIMESTAMPTZ
        );
        CREATE INDEX vc_jobs_vm ON vc_jobs (vm_uuid, state);
        CREATE INDEX vc_jobs_open ON vc_jobs (host, seq)
            WHERE state IN ('QUEUED', 'ACQUIRING', 'SCANNING', 'PUBLISHING');
        CREATE TABLE vc_actions (
            seq BIGSERIAL PRIMARY KEY,
            job_id TEXT NOT NULL,
            vm_uuid TEXT NOT NULL,
            vm_name TEXT NOT NULL,
            kind TEXT NOT NULL,
            params TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at DOUBLE PRECISION NOT NULL,
            last_error TEXT NOT NULL DEFAULT '',
            prior TEXT,
            result TEXT NOT NULL DEFAULT '',
            created_at DOUBLE PRECISION NOT NULL,
            done_at DOUBLE PRECISION,
            applied_by TEXT,
            UNIQUE (job_id, kind)
        );
        CREATE INDEX vc_actions_state ON vc_actions (state, next_at)
        """,
    ),
    Migration(
        7,
        "event sinks relay scan_events from PostgreSQL: each row's transaction id, per-sink cursors",
        """
        ALTER TABLE scan_events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
        CREATE INDEX scan_events_order ON scan_events (tx, seq);
        CREATE TABLE event_cursors (
            sink TEXT PRIMARY KEY,
            tx xid8 NOT NULL DEFAULT '0',
            seq BIGINT NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at DOUBLE PRECISION NOT NULL DEFAULT 0,
            last_error TEXT NOT NULL DEFAULT ''
        )
        """,
    ),
)


def current_version(conn: Any) -> int:
    """The version recorded in ``schema_version`` (0 for an empty database)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
        " description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(row[0])


def migrate(conn: Any, where: str, upto: int | None = None) -> int:
    """Bring the schema of ``conn`` (a psycopg connection) to the newest version (or ``upto``,
    for tests of upgrades); returns it."""
    newest = MIGRATIONS[-1].version
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        version = current_version(conn)
        if version > newest:
            raise Unavailable(
                f"state at {where}: schema version {version} is newer than this appliance knows"
                f" ({newest}); upgrade this appliance"
            )
        for step in MIGRATIONS:
            if version < step.version <= (newest if upto is None else upto):
                for statement in step.sql.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                    (step.version, step.description),
                )
    return newest
