"""Appliances of one fleet on a real PostgreSQL: the real service killed -9 mid-scan, the fleet
view, routing by placement, and the config that selects all this."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.samples import EICAR_RULE, eicar, sparse_image

from scanner.app import App
from scanner.cli.main import cli
from scanner.config import load_config
from scanner.errors import ConfigError, Unavailable
from scanner.fleet.manager import FleetScanManager
from scanner.state.postgres import PostgresDatabase
from scanner.targets import TargetSpec
from scanner.verdicts import VerdictKind
from tests.support.postgres import PostgresServer, fresh_database, postgres

__all__ = ["postgres"]
SLOW_ENGINE = (
    "[engine]\nthreads = 1\nchunk_size = 65536\noverlap = 4096\nskip_zero_blocks = false\n[cache]\nenabled = false\n"
)


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    return fresh_database(postgres)


def fleet_toml(path: Path, url: str, host: str, name: str, extra: str = "") -> Path:
    path.write_text(
        f'state_dir = "{path.parent / name}"\n[state]\nurl = "{url}"\n'
        f'[fleet]\nhost = "{host}"\nname = "{name}"\nlease_seconds = 2\npoll_seconds = 0.2\n'
        f"[jobs]\nmax_concurrent_scans = 1\n{extra}"
    )
    return path


def wait_for(what: str, check: object, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def observer(url: str) -> Iterator[PostgresDatabase]:
    db = PostgresDatabase(url, host="esx1", appliance="observer")
    yield db
    db.close()


def test_kill_9_of_an_appliance_mid_scan_loses_nothing_and_the_scan_is_recorded_once(
    tmp_path: Path, url: str, observer: PostgresDatabase
) -> None:
    image = sparse_image(tmp_path / "guest.raw", 1 << 30, {(1 << 30) - 4096: eicar()})
    config_a = fleet_toml(tmp_path / "a.toml", url, "esx1", "a", SLOW_ENGINE)
    a = subprocess.Popen(
        [sys.executable, "-m", "scanner", "--config", str(config_a), "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        record, _ = observer.create_scan(TargetSpec("memory", {"path": str(image)}), {}, "soc", request_id="r1")
        wait_for("appliance a to run the scan", lambda: observer.get_scan(record.id).state == "RUNNING")
        os.kill(a.pid, signal.SIGKILL)
    finally:
        a.kill()
        a.wait()
    assert observer.get_scan(record.id).state == "RUNNING"  # dead, but its lease still stands

    b = App(load_config(fleet_toml(tmp_path / "b.toml", url, "esx1", "b")))

    async def run_b() -> None:
        await asyncio.to_thread(b.prepare)
        await b.scans.start()
        await asyncio.to_thread(wait_for, "b to finish it", lambda: observer.get_scan(record.id).state == "DONE")
        await b.scans.shutdown(0)

    try:
        asyncio.run(run_b())
    finally:
        b.close()
    done = observer.get_scan(record.id)
    assert done.attempts == 2, "run by a, then once more by b after a's lease expired"
    assert done.verdict is not None and done.verdict.kind is VerdictKind.MALICIOUS
    assert [f.rule for f in observer.findings(record.id)] == [EICAR_RULE]
    assert len(observer.list_scans(100, None, None)) == 1


def test_the_fleet_view_lists_appliances_and_routes_a_guest_to_its_host(tmp_path: Path, url: str) -> None:
    a = App(load_config(fleet_toml(tmp_path / "a.toml", url, "esx1", "a")))
    b = App(load_config(fleet_toml(tmp_path / "b.toml", url, "esx2", "b")))
    assert isinstance(a.scans, FleetScanManager) and isinstance(b.scans, FleetScanManager)
    fleet_a, fleet_b = a.scans, b.scans
    guest = TargetSpec("guest", {"domain": "vm1", "ram": "/nowhere/on/esx1"})

    async def scenario() -> tuple[str, str, list[tuple[str, str, bool]], list[tuple[str, bool]]]:
        await fleet_a.start()
        await fleet_b.start()
        view = [(i.name, i.host, i.alive) for i in await asyncio.to_thread(fleet_a.registry.fleet)]
        await asyncio.to_thread(fleet_a.registry.place, "domain:vm1", "esx2")
        on_b = await fleet_a.submit(guest, {}, "soc")  # accepted on a, its paths mean nothing on esx1
        await asyncio.to_thread(fleet_a.registry.place, "domain:vm1", "esx3")  # vMotion to a host of its own
        on_c = await fleet_a.submit(guest, {}, "soc")
        await fleet_b.shutdown(0)
        after = [(i.name, i.alive) for i in await asyncio.to_thread(fleet_a.registry.fleet)]
        await fleet_a.shutdown(0)
        return on_b.id, on_c.id, view, after

    try:
        first, second, view, after = asyncio.run(scenario())
        assert a.db.host_of(first) == "esx2"  # type: ignore[attr-defined]
        assert a.db.host_of(second) == "esx3"  # type: ignore[attr-defined]
    finally:
        a.close()
        b.close()
    assert view == [("a", "esx1", True), ("b", "esx2", True)]
    assert after == [("a", True), ("b", False)]
    shown = CliRunner().invoke(cli, ["--config", str(tmp_path / "a.toml"), "fleet"])
    assert shown.exit_code == 0, shown.output
    assert [line.split()[:3] for line in shown.output.splitlines()[1:-1]] == [
        ["a", "esx1", "down"],
        ["b", "esx2", "down"],
    ]
    (tmp_path / "alone.toml").write_text(f'state_dir = "{tmp_path / "alone"}"\n')
    alone = CliRunner().invoke(cli, ["--config", str(tmp_path / "alone.toml"), "fleet"])
    assert alone.exit_code == 2 and "has no [state] url" in alone.output  # an error: exit 2, as every CLI error


def test_config_selects_the_postgresql_state_and_refuses_a_bad_url(tmp_path: Path, url: str) -> None:
    config = load_config(fleet_toml(tmp_path / "f.toml", url, "esx9", "n9"))
    assert (config.state.url, config.fleet.host_identity, config.fleet.appliance) == (url, "esx9", "n9")
    assert load_config(None, state_dir=tmp_path).state.url == ""  # absent: SQLite under state_dir
    (tmp_path / "bad.toml").write_text('[state]\nurl = "mysql://x"\n')
    with pytest.raises(ConfigError, match=r"state.url must be a postgresql:// URL"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "bad2.toml").write_text("[fleet]\nlease_seconds = 0\n")
    with pytest.raises(ConfigError, match=r"fleet.lease_seconds must be between 1 and 3600"):
        load_config(tmp_path / "bad2.toml")


def test_a_live_appliance_keeps_its_long_scan_past_many_leases(
    tmp_path: Path, url: str, observer: PostgresDatabase
) -> None:
    """The heartbeat renews the lease: the host's other appliance never takes the scan over."""
    image = sparse_image(tmp_path / "guest.raw", 16 << 30)  # sparse: minutes to scan, no disk used
    a = App(load_config(fleet_toml(tmp_path / "a.toml", url, "esx1", "a", SLOW_ENGINE)))
    b = App(load_config(fleet_toml(tmp_path / "b.toml", url, "esx1", "b")))
    lease = a.config.fleet.lease_seconds

    async def scenario() -> tuple[int, str]:
        await asyncio.to_thread(a.prepare)
        await asyncio.to_thread(b.prepare)
        await a.scans.start()
        record = await a.scans.submit(TargetSpec("memory", {"path": str(image)}), {}, "soc")
        await asyncio.to_thread(wait_for, "a to run it", lambda: observer.get_scan(record.id).state == "RUNNING")
        await b.scans.start()
        ends = time.monotonic() + 4 * lease  # several leases long, b idle and polling all along
        while time.monotonic() < ends and observer.get_scan(record.id).state == "RUNNING":
            await asyncio.sleep(0.1)
        seen = await asyncio.to_thread(observer.get_scan, record.id)
        await b.scans.shutdown(0)
        await a.scans.shutdown(0)
        return seen.attempts, seen.state

    try:
        attempts, state = asyncio.run(scenario())
    finally:
        a.close()
        b.close()
    assert (attempts, state) == (1, "RUNNING"), "still a's first run"


def test_a_cancel_asked_on_one_appliance_stops_the_scan_running_on_another(
    tmp_path: Path, url: str, observer: PostgresDatabase
) -> None:
    image = sparse_image(tmp_path / "guest.raw", 16 << 30)
    a = App(load_config(fleet_toml(tmp_path / "a.toml", url, "esx1", "a", SLOW_ENGINE)))
    b = App(load_config(fleet_toml(tmp_path / "b.toml", url, "esx2", "b")))

    async def scenario() -> tuple[str, str]:
        await asyncio.to_thread(a.prepare)
        await a.scans.start()
        await b.scans.start()
        record = await a.scans.submit(TargetSpec("memory", {"path": str(image)}), {}, "soc")
        await asyncio.to_thread(wait_for, "a to run it", lambda: observer.get_scan(record.id).state == "RUNNING")
        asked = await b.scans.cancel(record.id, "dave")  # b (another host) does not run it
        await asyncio.to_thread(wait_for, "a to stop it", lambda: observer.get_scan(record.id).state == "CANCELLED")
        await b.scans.shutdown(0)
        await a.scans.shutdown(0)
        return asked.state, record.id

    try:
        asked, scan_id = asyncio.run(scenario())
    finally:
        a.close()
        b.close()
    assert asked == "RUNNING"
    assert ("dave", "scan.cancel", scan_id) in [(r.actor, r.action, r.subject) for r in observer.audit_log()]


def test_a_postgres_restart_under_a_running_fleet_loses_no_scan(
    tmp_path: Path, url: str, postgres: PostgresServer
) -> None:
    """Scans committed before the restart and after it all end DONE, each with a verdict."""
    images = [sparse_image(tmp_path / f"g{i}.raw", 128 << 20, {i * 4096: eicar()}) for i in range(12)]
    a = App(load_config(fleet_toml(tmp_path / "a.toml", url, "esx1", "a", SLOW_ENGINE)))
    unfinished_at_restart: list[str] = []
    spec = [TargetSpec("memory", {"path": str(p)}) for p in images]

    async def scenario() -> list[str]:
        await asyncio.to_thread(a.prepare)
        await a.scans.start()
        ids = [(await a.scans.submit(s, {}, "soc")).id for s in spec[:6]]
        await asyncio.to_thread(wait_for, "a to run one", lambda: a.db.get_scan(ids[0]).state == "RUNNING")
        unfinished_at_restart.extend(i for i in ids if a.db.get_scan(i).state != "DONE")
        await asyncio.to_thread(postgres.restart)
        for s in spec[6:]:
            for _ in range(100):  # the pool reconnects; a refused submit acknowledged nothing
                try:
                    ids.append((await a.scans.submit(s, {}, "soc")).id)
                    break
                except Unavailable:
                    await asyncio.sleep(0.1)
        await asyncio.to_thread(
            wait_for, "every scan to finish", lambda: all(a.db.get_scan(i).state == "DONE" for i in ids)
        )
        await a.scans.shutdown(0)
        return ids

    try:
        ids = asyncio.run(scenario())
        records = [a.db.get_scan(i) for i in ids]
    finally:
        a.close()
    assert len(unfinished_at_restart) >= 2, "the restart came mid-load"
    assert len(records) == 12
    assert all(r.verdict is not None and r.verdict.kind is VerdictKind.MALICIOUS for r in records)
