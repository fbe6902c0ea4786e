"""Opens the state the config names: SQLite under ``state_dir``, or the fleet's PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from scanner.fleet.settings import FleetSettings
from scanner.state.db import Database
from scanner.state.settings import StateSettings


def open_state(settings: StateSettings, state_dir: Path, fleet: FleetSettings) -> Database:
    """The state; a :class:`PostgresDatabase` has every public method of :class:`Database`
    (tests/state/test_state_postgres.py checks it), so callers need not know which it is."""
    if not settings.url:
        return Database(state_dir / "state.sqlite3")
    from scanner.state.postgres import PostgresDatabase

    db = PostgresDatabase(settings.url, fleet.host_identity, fleet.appliance, fleet.lease_seconds)
    return cast(Database, db)
