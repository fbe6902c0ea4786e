"""Two real ``avscan serve`` processes on one PostgreSQL: one fleet to a SOC client over gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.samples import sample_dir
from support.service import Service

from scanner.api.client import files_target
from scanner.v1 import scans_pb2, verdict_pb2
from tests.support.postgres import PostgresServer, fresh_database, postgres

__all__ = ["postgres"]


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.close()


def test_a_scan_started_on_one_appliance_is_seen_and_awaited_on_the_other(
    tmp_path: Path, postgres: PostgresServer, services: list[Service]
) -> None:
    url = fresh_database(postgres)
    samples = sample_dir(tmp_path / "samples")
    for name, host in (("a", "esx1"), ("b", "esx2")):
        (tmp_path / f"{name}.toml").write_text(
            f'[state]\nurl = "{url}"\n[fleet]\nhost = "{host}"\nname = "{name}"\n'
            "lease_seconds = 2\npoll_seconds = 0.2\n"
        )
        services.append(Service(tmp_path / f"state-{name}", tmp_path / f"{name}.toml"))
    a, b = services
    with a.client() as soc_a:
        started = soc_a.start_scan(files_target(str(samples)), request_id="ticket-7")
    with b.client() as soc_b:
        done = soc_b.wait(started.scan_id, timeout=120)  # b follows a scan that runs on a's host
        listed = [s.scan_id for s in soc_b.list_scans().scans]
        again = soc_b.start_scan(files_target(str(samples)), request_id="ticket-7")
    assert done.state == scans_pb2.SCAN_STATE_DONE
    assert done.verdict.kind == verdict_pb2.VERDICT_KIND_MALICIOUS
    assert listed == [started.scan_id]
    assert again.scan_id == started.scan_id, "a retry on another appliance gets the same scan"
