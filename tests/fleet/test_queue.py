"""The fleet's job queue on a real PostgreSQL: appliances as separate objects on one database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from scanner.fleet.queue import JobQueue
from scanner.state.postgres import PostgresDatabase
from scanner.targets import TargetSpec
from tests.support.postgres import PostgresServer, fresh_database, postgres

__all__ = ["postgres"]
SPEC = TargetSpec("files", {"paths": ["/srv/data"]})


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    return fresh_database(postgres)


@pytest.fixture
def opened() -> Iterator[list[PostgresDatabase]]:
    dbs: list[PostgresDatabase] = []
    yield dbs
    for db in dbs:
        db.close()


def appliance(opened: list[PostgresDatabase], url: str, host: str, name: str, lease: float = 30.0) -> JobQueue:
    db = PostgresDatabase(url, host=host, appliance=name, lease_seconds=lease)
    opened.append(db)
    return JobQueue(db)


def test_appliances_of_one_host_never_claim_the_same_scan(url: str, opened: list[PostgresDatabase]) -> None:
    queues = [appliance(opened, url, "esx1", f"a{i}") for i in range(4)]
    submitted = {queues[0].db.create_scan(SPEC, {}, "soc")[0].id for _ in range(120)}
    claimed: list[list[str]] = [[] for _ in queues]

    def drain(i: int) -> None:
        while (record := queues[i].claim()) is not None:
            claimed[i].append(record.id)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(queues))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [scan_id for ids in claimed for scan_id in ids]
    assert sorted(every) == sorted(submitted), "each scan claimed exactly once"
    assert sum(1 for ids in claimed if ids) >= 2, "the work was shared"


def test_an_appliance_takes_only_the_jobs_of_its_host(url: str, opened: list[PostgresDatabase]) -> None:
    esx1, esx2 = appliance(opened, url, "esx1", "a"), appliance(opened, url, "esx2", "b")
    record, _ = esx1.db.create_scan(SPEC, {}, "soc", host="esx2")  # any appliance accepts it
    assert esx1.claim() is None
    taken = esx2.claim()
    assert taken is not None and taken.id == record.id and taken.state == "RUNNING" and taken.attempts == 1


def test_a_dead_appliances_scan_waits_for_its_lease_then_runs_once_more(
    url: str, opened: list[PostgresDatabase]
) -> None:
    dead, alive = appliance(opened, url, "esx1", "a", lease=1.0), appliance(opened, url, "esx1", "b", lease=1.0)
    record, _ = dead.db.create_scan(SPEC, {}, "soc")
    assert dead.claim() is not None
    assert alive.claim() is None, "a live lease is respected"
    deadline = time.monotonic() + 30
    while (taken := alive.claim()) is None and time.monotonic() < deadline:
        alive.wait(0.2)
    assert taken is not None and taken.id == record.id and taken.attempts == 2
    assert dead.db.finish_scan(record.id, "DONE", None) is False, "the old holder is fenced out"
    assert alive.db.finish_scan(record.id, "DONE", None) is True
    assert alive.db.get_scan(record.id).state == "DONE"
    assert alive.claim() is None


def test_renewed_leases_are_kept_and_a_restarted_appliance_recovers_its_own(
    url: str, opened: list[PostgresDatabase]
) -> None:
    a, b = appliance(opened, url, "esx1", "a", lease=1.0), appliance(opened, url, "esx1", "b", lease=1.0)
    first, _ = a.db.create_scan(SPEC, {}, "soc")
    second, _ = a.db.create_scan(SPEC, {}, "soc")
    assert a.claim() is not None and a.claim() is not None
    ends = time.monotonic() + 2.5  # more than two leases, renewed all along
    while time.monotonic() < ends:
        assert a.renew({first.id, second.id}) == ({first.id, second.id}, set())
        assert b.claim() is None
        a.wait(0.2)
    restarted = appliance(opened, url, "esx1", "a")  # same name: its previous life held both
    assert restarted.recover() == 2
    assert {b.claim().id, b.claim().id} == {first.id, second.id}  # type: ignore[union-attr]


def test_a_new_scan_wakes_only_the_appliances_of_its_host(url: str, opened: list[PostgresDatabase]) -> None:
    esx1, esx2 = appliance(opened, url, "esx1", "a"), appliance(opened, url, "esx2", "b")
    assert esx1.wait(0.05) is False and esx2.wait(0.05) is False  # listening from now on
    esx1.db.create_scan(SPEC, {}, "soc", host="esx2")
    assert esx2.wait(10) is True
    assert esx1.wait(0.2) is False
    esx1.close()
    esx2.close()


def test_a_scan_started_max_attempts_times_is_leased_to_be_given_up_not_counted_again(
    url: str, opened: list[PostgresDatabase]
) -> None:
    queue = appliance(opened, url, "esx1", "a")
    record, _ = queue.db.create_scan(SPEC, {}, "soc")
    for attempt in (1, 2):  # started, and lost (the appliance restarted) each time
        claimed = queue.claim_next(max_attempts=2)
        assert claimed is not None and claimed[0].attempts == attempt and claimed[1] is True
        assert queue.recover() == 1
    exhausted = queue.claim_next(max_attempts=2)
    assert exhausted is not None and exhausted[1] is False, "leased only to be given up"
    assert exhausted[0].id == record.id and exhausted[0].state == "RUNNING"
    assert queue.db.get_scan(record.id).attempts == 2, "it ran twice: the give-up claim is no run"
