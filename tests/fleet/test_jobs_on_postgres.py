"""The jobs durability suite (tests/jobs) again, with the state and queue in a real PostgreSQL:
the real service is killed -9 or stopped mid-scan and restarted on the same database."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.state.postgres import PostgresDatabase
from tests.jobs import test_jobs_durability as suite
from tests.support.postgres import PostgresServer, fresh_database, postgres

__all__ = ["postgres", "services"]
services = suite.services


@pytest.fixture
def config(tmp_path: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    url = fresh_database(postgres)
    fleet = f'[state]\nurl = "{url}"\n[fleet]\nhost = "esx1"\nname = "a"\nlease_seconds = 5\npoll_seconds = 0.5\n'
    path = tmp_path / "avscan.toml"
    path.write_text(suite.CONFIG + fleet)

    def read_scan(state: Path, scan_id: str) -> object:
        db = PostgresDatabase(url, host="esx1", appliance="reader")
        try:
            return db.get_scan(scan_id)
        finally:
            db.close()

    monkeypatch.setattr(suite, "read_scan", read_scan)
    return path


test_acknowledged_scans_survive_sigkill = suite.test_acknowledged_scans_survive_sigkill
test_sigterm_interrupts_a_long_scan_and_the_next_start_reruns_it = (
    suite.test_sigterm_interrupts_a_long_scan_and_the_next_start_reruns_it
)
