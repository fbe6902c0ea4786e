"""Event sinks of a fleet: two real ``avscan serve`` processes on one PostgreSQL relay the ECS
documents of every scan to one JSON-lines file, one relay at a time, and none is lost when the
relaying appliance is killed -9 (the other takes the sink over from the shared cursor)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from outputs.receivers import Webhook
from support.samples import sample_dir
from support.service import Service

from scanner.api.client import files_target
from scanner.fleet.leadership import EVENT_RELAY, leaders
from scanner.v1 import scans_pb2
from tests.support.postgres import PostgresServer, fresh_database, postgres

__all__ = ["postgres"]


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.close()


def start_fleet(tmp_path: Path, url: str, sink: str, services: list[Service]) -> dict[str, Service]:
    """Appliances a (esx1) and b (esx2) with one event sink (a TOML table body)."""
    for name, host in (("a", "esx1"), ("b", "esx2")):
        (tmp_path / f"{name}.toml").write_text(
            f'[state]\nurl = "{url}"\n[fleet]\nhost = "{host}"\nname = "{name}"\n'
            f"lease_seconds = 2\npoll_seconds = 0.2\n[[events.sinks]]\n{sink}"
        )
        services.append(Service(tmp_path / f"state-{name}", tmp_path / f"{name}.toml"))
    return dict(zip("ab", services, strict=True))


def received(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def scan_ids_in(docs: list[dict[str, object]]) -> set[str]:
    return {str(d["avscan"]["scan"]["id"]) for d in docs if "scan" in d.get("avscan", {})}  # type: ignore[union-attr, attr-defined]


def wait_until(predicate, what: str, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def relayer(url: str) -> str:
    """The appliance that holds the sink's relay role now ("" if none), as PostgreSQL reports it."""
    with psycopg.connect(url, autocommit=True) as conn:
        holders = leaders(conn, EVENT_RELAY)
    names = [name.split()[1] for name in holders if " leads events " in name]
    assert len(names) <= 1, f"two relays of one sink: {holders}"
    return names[0] if names else ""


def backlog(url: str, sink: str) -> int:
    """Documents after the sink's confirmed cursor."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM scan_events e JOIN event_cursors c ON c.sink = %s"
            " WHERE (e.tx, e.seq) > (c.tx, c.seq)",
            (sink,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def run_scans(service: Service, samples: Path, n: int) -> list[str]:
    with service.client() as soc:
        ids = [soc.start_scan(files_target(str(samples))).scan_id for _ in range(n)]
        for scan_id in ids:
            assert soc.wait(scan_id, timeout=120).state == scans_pb2.SCAN_STATE_DONE
    return ids


def test_every_document_reaches_the_sink_once_and_survives_the_relay_being_killed(
    tmp_path: Path, postgres: PostgresServer, services: list[Service]
) -> None:
    url = fresh_database(postgres)
    samples = sample_dir(tmp_path / "samples")
    events = tmp_path / "events.jsonl"
    by_name = start_fleet(tmp_path, url, f'kind = "jsonl"\nname = "file"\npath = "{events}"\n', services)
    first = run_scans(by_name["a"], samples, 3) + run_scans(by_name["b"], samples, 3)
    wait_until(lambda: scan_ids_in(received(events)) >= set(first), "the first scans' documents")
    docs = received(events)
    counts = Counter(str(d["event"]["id"]) for d in docs)  # type: ignore[index]
    assert counts and max(counts.values()) == 1, "nothing died: each document arrives once"

    wait_until(lambda: backlog(url, "file") == 0, "the shared cursor past them")
    holder = wait_until(lambda: relayer(url), "a relay of the sink")
    by_name[holder].kill()  # -9: its session ends, its lock with it
    survivor = by_name["b" if holder == "a" else "a"]
    later = run_scans(survivor, samples, 3)
    wait_until(lambda: scan_ids_in(received(events)) >= set(first + later), "the documents after the kill")
    assert relayer(url) == ("b" if holder == "a" else "a")
    after = received(events)
    by_id: dict[str, str] = {}
    for d in after:  # a redelivered document is the same document (stable event.id)
        key = str(d["event"]["id"])  # type: ignore[index]
        assert by_id.setdefault(key, json.dumps(d, sort_keys=True)) == json.dumps(d, sort_keys=True)
    assert scan_ids_in(after) == set(first + later)
    assert len(by_id) == len(after), "the other appliance went on from the shared cursor: nothing sent twice"


def test_a_backlog_the_killed_relay_could_not_deliver_is_delivered_by_the_other(
    tmp_path: Path, postgres: PostgresServer, services: list[Service], webhook: Webhook
) -> None:
    url = fresh_database(postgres)
    samples = sample_dir(tmp_path / "samples")
    webhook.down = True  # the SOAR endpoint is out: documents pile up behind the relay
    by_name = start_fleet(tmp_path, url, f'kind = "webhook"\nname = "soar"\nurl = "{webhook.url}"\n', services)
    scans = run_scans(by_name["a"], samples, 2) + run_scans(by_name["b"], samples, 2)
    wait_until(lambda: webhook.refused > 0, "the relay trying the endpoint")
    holder = wait_until(lambda: relayer(url), "a relay of the sink")
    by_name[holder].kill()  # -9 with its whole backlog undelivered
    webhook.down = False
    docs = lambda: [e["data"] for e in webhook.events]  # noqa: E731
    wait_until(lambda: scan_ids_in(docs()) == set(scans), "the backlog through the other appliance")
    assert relayer(url) == ("b" if holder == "a" else "a")
    ids = [str(d["event"]["id"]) for d in docs()]
    assert len(ids) == len(set(ids)), "nothing was confirmed twice: each document arrives once"
