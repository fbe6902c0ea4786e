"""A scan for a guest whose host has no live appliance waits in the fleet's queue (not taken by
another host's appliance, not lost) and runs once when an appliance of that host comes up."""

from __future__ import annotations

from pathlib import Path

from support.samples import sample_dir
from support.service import Service

from scanner.api.client import files_target
from scanner.state.postgres import PostgresDatabase
from scanner.targets import TargetSpec
from scanner.v1 import scans_pb2
from tests.support.postgres import PostgresServer, fresh_database, postgres

__all__ = ["postgres"]


def appliance(tmp_path: Path, url: str, name: str, host: str) -> Service:
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'[state]\nurl = "{url}"\n[fleet]\nhost = "{host}"\nname = "{name}"\nlease_seconds = 2\npoll_seconds = 0.2\n'
    )
    return Service(tmp_path / f"state-{name}", config)


def test_a_guest_scan_for_a_host_without_appliance_waits_then_runs_once_there(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = fresh_database(postgres)
    soc = PostgresDatabase(url, host="esx1", appliance="soc")  # the SOC's entry, as any appliance would
    services = [appliance(tmp_path, url, "a", "esx1")]
    try:
        with soc.connection() as conn:
            conn.execute("INSERT INTO placements (guest, host, updated_at) VALUES ('domain:vm9', 'esx3', now())")
        guest = TargetSpec("guest", {"domain": "vm9", "ram": str(tmp_path / "vm9.ram")})
        orphan, _ = soc.create_scan(guest, {}, "soc", host="esx3")
        with services[0].client() as client:  # a later scan on a's own host runs to its end meanwhile
            later = client.start_scan(files_target(str(sample_dir(tmp_path / "samples")))).scan_id
            assert client.wait(later, timeout=120).state == scans_pb2.SCAN_STATE_DONE
        waiting = soc.get_scan(orphan.id)
        assert (waiting.state, waiting.attempts) == ("QUEUED", 0), "another host's appliance never takes it"

        services.append(appliance(tmp_path, url, "c", "esx3"))
        with services[1].client() as client:
            done = client.wait(orphan.id, timeout=120)
        assert done.state == scans_pb2.SCAN_STATE_DONE
        assert soc.get_scan(orphan.id).attempts == 1, "run once, by the appliance of its host"
    finally:
        for service in services:
            service.close()
        soc.close()
