"""The fleet's signature store on a real PostgreSQL, two appliances' stores side by side (each with
its own local compile directory): fleet versions, on-demand compilation of a pinned ruleset,
per-appliance trust, sources tampered with in the database, one default for a fleet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from support.samples import marker, marker_rule

from scanner.errors import PermissionDenied
from scanner.rulesets.fleet_store import FleetRulesetStore
from scanner.rulesets.model import RulesetFile, ruleset_digest
from scanner.rulesets.signing import TrustedKeys, sign
from scanner.rulesets.store import PushOptions, RulesetStore
from scanner.state.postgres import PostgresDatabase
from tests.support.postgres import PostgresServer, fresh_database, postgres

__all__ = ["postgres"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    return fresh_database(postgres)


@pytest.fixture
def dbs(url: str) -> Iterator[list[PostgresDatabase]]:
    opened = [PostgresDatabase(url, host=f"esx{i}", appliance=name) for i, name in enumerate(("a", "b"))]
    yield opened
    for db in opened:
        db.close()


def fleet_store(db: PostgresDatabase, root: Path, trust: TrustedKeys | None = None) -> FleetRulesetStore:
    return FleetRulesetStore(db, RulesetStore(root / db.appliance, trust=trust))


def files(name: str) -> list[RulesetFile]:
    return [RulesetFile("m.yar", marker_rule(name))]


def test_versions_are_the_fleets_and_a_pinned_ruleset_compiles_where_it_is_asked_for(
    tmp_path: Path, dbs: list[PostgresDatabase]
) -> None:
    a, b = (fleet_store(db, tmp_path) for db in dbs)
    first = a.push(files("one"), "one", "", "alice")
    second = b.push(files("two"), "two", "", "bob")
    again = b.push(files("one"), "one again", "", "bob")  # the same content, pushed elsewhere
    assert (first.version, second.version, again) == (first.version, first.version + 1, first)
    assert [i.digest for i in a.list()] == [i.digest for i in b.list()] == [first.digest, second.digest]
    pinned = b.load(first.digest)  # never compiled on b: compiled now, from the fleet's sources
    assert (pinned.digest, pinned.version) == (first.digest, first.version)
    assert [m.rule for m in pinned.rules.match(data=b"..." + marker("one") + b"...")] == ["Marker_one"]


def test_an_appliance_that_does_not_trust_the_signer_keeps_its_ruleset_and_does_not_retry(
    tmp_path: Path, dbs: list[PostgresDatabase]
) -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    a = fleet_store(dbs[0], tmp_path, TrustedKeys((("secteam", public),)))
    b = fleet_store(dbs[1], tmp_path, TrustedKeys((("other", bytes(32)),)))  # trusts someone else
    one, two = files("one"), files("two")
    for bundle, version in ((one, 1), (two, 2)):
        signature = sign(key, "secteam", ruleset_digest(bundle), version)
        a.activate(a.push(bundle, f"v{version}", "", "alice", PushOptions(signature=signature)).digest, "alice")
        first = b.sync()
        assert first is not None and first.wanted == ruleset_digest(bundle)
        assert first.running == "" and "unknown key 'secteam'" in first.error
    assert b.sync() == first, "the same failed generation is reported, not compiled again"
    assert b.local.list() == [], "b compiled nothing it does not trust"
    with pytest.raises(PermissionDenied):
        b.activate(ruleset_digest(one), "bob")  # nor can it be made to on b


def test_sources_changed_in_the_database_are_refused_by_the_follower(
    tmp_path: Path, dbs: list[PostgresDatabase]
) -> None:
    a, b = (fleet_store(db, tmp_path) for db in dbs)
    good = a.push(files("one"), "one", "", "alice")
    a.activate(good.digest, "alice")
    assert b.sync() is not None
    evil = a.push(files("two"), "two", "", "alice")
    with dbs[0].connection() as conn:  # someone with write access to the database swaps the rule
        conn.execute("UPDATE ruleset_files SET data = %s WHERE digest = %s", (marker_rule("evil"), evil.digest))
    a.activate(evil.digest, "alice")  # a compiled it at push, from the sources it was given
    followed = b.sync()
    assert followed is not None and followed.running == good.digest
    assert "fails sha256 verification" in followed.error


def test_a_later_appliance_follows_the_fleets_default_instead_of_installing_its_own(
    tmp_path: Path, dbs: list[PostgresDatabase]
) -> None:
    a, b = (fleet_store(db, tmp_path) for db in dbs)
    other = tmp_path / "other-defaults"
    other.mkdir()
    (other / "x.yar").write_bytes(marker_rule("other"))
    installed = a.ensure_default(REPO / "signatures")
    assert installed is not None
    assert b.ensure_default(other) is None, "a later appliance follows the fleet instead"
    assert b.active() is not None and b.active().digest == installed.digest  # type: ignore[union-attr]
    with dbs[0].connection() as conn:
        history = conn.execute("SELECT action, digest FROM ruleset_activations").fetchall()
    assert history == [("activate", installed.digest)]
