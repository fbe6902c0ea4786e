"""The result cache on a real PostgreSQL, shared by several appliances (issue 16, its cache part).

Each "appliance" is its own ResultCache on the same database, as separate processes would be.
The properties of the SQLite cache hold here too; a clone of a golden image scanned on one
appliance is a hit on another, with the findings of a plain scan; a host's own file stamps never
vouch for another host's files; a PostgreSQL restart mid-load loses nothing stored.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cache import MARKER, MiB, engines, scan, summary, write_image  # tests/engine is on sys.path

from scanner.config import load_config
from scanner.engine import cache as cache_module
from scanner.engine.cache import ResultCache
from scanner.errors import Unavailable
from scanner.verdicts import VerdictKind
from tests.support.postgres import PostgresServer, postgres

__all__ = ["postgres"]


@pytest.fixture
def database(postgres: PostgresServer) -> str:
    """A fresh database per test on the session's server: appliances of one fleet share it."""
    name = "fleet_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return postgres.url(name)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    blocks=st.lists(st.sampled_from(["z", "f", "r1", "r7"]), min_size=1, max_size=6),
    plants=st.lists(st.integers(0, 6 * MiB), max_size=4),
)
def test_findings_through_a_shared_cache_equal_a_plain_scan(tmp_path_factory, database, blocks, plants):
    tmp = tmp_path_factory.mktemp("fleet")
    size = len(blocks) * MiB
    kept = {o: MARKER for o in plants if o + len(MARKER) <= size}
    kept = {o: d for o, d in kept.items() if all(o == p or abs(o - p) >= len(MARKER) for p in kept)}
    path = write_image(tmp / "mem.raw", blocks, kept)
    host_a, host_b = ResultCache(database), ResultCache(database)
    plain, on_a = engines(host_a)
    _, on_b = engines(host_b)
    try:
        want = summary(scan(plain, path))
        cold = scan(on_a, path)
        other_host = scan(on_b, path)
    finally:
        for engine in (plain, on_a, on_b):
            engine.close()
        host_a.close()
        host_b.close()
    assert summary(cold) == want == summary(other_host)
    assert other_host.coverage.cache_misses == 0
    assert other_host.coverage.cache_hits == cold.coverage.cache_hits + cold.coverage.cache_misses


def test_a_golden_image_clone_scanned_on_host_a_is_a_hit_on_host_b(tmp_path, database):
    layout = ["f", "r1", "z", "r2", "r3", "z", "r4", "r5", "r6", "r7"]
    golden = write_image(tmp_path / "golden.raw", layout, {})
    clone = write_image(tmp_path / "clone.raw", layout, {7 * MiB + 100: MARKER})
    host_a, host_b = ResultCache(database), ResultCache(database)
    assert host_a.seed == host_b.seed  # one content-hash seed for the fleet
    plain, on_a = engines(host_a)
    _, on_b = engines(host_b)
    try:
        first = scan(on_a, golden)
        second = scan(on_b, clone)
        assert summary(second) == summary(scan(plain, clone))
    finally:
        for engine in (plain, on_a, on_b):
            engine.close()
    assert first.kind is VerdictKind.CLEAN and second.kind is VerdictKind.MALICIOUS
    assert second.coverage.cache_hits == first.coverage.cache_misses - 1  # only the changed cell is scanned
    assert second.coverage.cache_misses == 1


def test_a_hosts_file_stamps_never_vouch_for_another_hosts_files(tmp_path, database, monkeypatch):
    """Stamps (device, inode, times) mean something only where they were taken."""
    host_a = ResultCache(database)
    identity = b"dev=2049 ino=12 size=10 mtime=1 ctime=1"
    host_a.put(cache_module.identity_key(identity), ["00" * 16])
    assert host_a.get(cache_module.identity_key(identity)) is not None
    monkeypatch.setattr(cache_module, "HOST", b"another appliance")
    assert ResultCache(database).get(cache_module.identity_key(identity)) is None


def test_eviction_is_shared_and_bounded(database):
    a, b = ResultCache(database, max_bytes=1 * MiB), ResultCache(database, max_bytes=1 * MiB)
    for i in range(400):
        (a if i % 2 else b).put(i.to_bytes(4, "big"), [["x" * 4000]])
    total = a._store.totals()[1]
    assert total <= 1 * MiB
    assert b.get((399).to_bytes(4, "big")) is not None  # the newest survive, whoever wrote them
    assert a.get((0).to_bytes(4, "big")) is None


def test_a_postgres_restart_mid_load_loses_nothing_stored(database, postgres):
    cache = ResultCache(database)
    cache.put(b"before", [["kept"]])
    cache.close()
    postgres.restart()
    again = ResultCache(database)
    assert again.get(b"before") == [["kept"]]
    again.close()


def test_config_names_the_fleet_cache_and_a_bad_url_is_refused(tmp_path, database):
    path = tmp_path / "fleet.toml"
    path.write_text(f'[cache]\nurl = "{database}"\n')
    config = load_config(path, state_dir=tmp_path / "state")
    assert config.cache.url == database
    path.write_text('[cache]\nurl = "mysql://x"\n')
    with pytest.raises(Exception, match=r"cache.url must be a postgresql:// URL"):
        load_config(path, state_dir=tmp_path / "state")


def test_an_unreachable_database_is_a_clear_error(postgres):
    with pytest.raises(Unavailable, match=r"result cache at postgresql://postgres@127.0.0.1:1/x"):
        ResultCache("postgresql://postgres@127.0.0.1:1/x")
