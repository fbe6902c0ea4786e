"""Signatures once, everywhere: two real ``avscan serve`` processes on one PostgreSQL.

A ruleset pushed and activated on one appliance becomes active on both (each compiles it); a
rollback asked of either rolls back both; an appliance that cannot compile the fleet's ruleset
(here: its own ``max_ruleset_bytes`` is smaller) keeps its previous one, says so in the fleet
view, the audit log and its service log, and its scans record the digest they really used.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.service import Service

from scanner.api.client import Client, files_target
from scanner.cli.main import cli
from scanner.fleet.rollout import Rollout, rollout
from scanner.rulesets.pointer import Activation, ActivePointer, pointer_to_bytes
from scanner.state.postgres import PostgresDatabase
from scanner.v1 import scans_pb2, signatures_pb2
from tests.support.postgres import PostgresServer, fresh_database, postgres

__all__ = ["postgres"]


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    return fresh_database(postgres)


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.close()


@pytest.fixture
def observer(url: str) -> Iterator[PostgresDatabase]:
    db = PostgresDatabase(url, host="observer", appliance="observer")
    yield db
    db.close()


def start(
    tmp_path: Path, url: str, services: list[Service], name: str, host: str, extra: str = "", poll: float = 0.2
) -> Service:
    """``poll``: the follower's safety-net poll; 3600 leaves only NOTIFY to carry a pointer move."""
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'[state]\nurl = "{url}"\n[fleet]\nhost = "{host}"\nname = "{name}"\n'
        f"lease_seconds = {max(2.0, poll)}\npoll_seconds = {poll}\n{extra}"
    )
    service = Service(tmp_path / f"state-{name}", config)
    services.append(service)
    return service


def marker_rules(marker: str, padding: int = 0) -> list[tuple[str, bytes]]:
    """A rule that finds ``marker`` (made at test time), padded with a comment to ``padding`` bytes."""
    rule = f'rule fleet_marker {{ meta: severity = "high" strings: $m = "{marker}" condition: $m }}\n'
    comment = "// " + "x" * max(0, padding - len(rule)) + "\n" if padding else ""
    return [("fleet/marker.yar", (comment + rule).encode())]


def wait_rollout(observer: PostgresDatabase, what: str, check: object, seconds: float = 120) -> Rollout:
    """Poll the fleet's signature state until ``check(rollout)`` holds."""
    deadline = time.monotonic() + seconds
    while True:
        state = rollout(observer)
        if check(state):  # type: ignore[operator]
            return state
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {state}"
        time.sleep(0.05)


def running(state: Rollout) -> dict[str, str]:
    return {a.appliance: a.running for a in state.appliances}


def scan_rules(client: Client, directory: Path) -> tuple[str, set[str]]:
    """Scan ``directory`` through ``client``'s appliance: the digest used and the rules that hit."""
    started = client.start_scan(files_target(str(directory)))
    deadline = time.monotonic() + 120
    done = client.get_scan(started.scan_id)  # polled: a watch of an unclaimed scan sleeps poll_seconds
    while done.state in (scans_pb2.SCAN_STATE_QUEUED, scans_pb2.SCAN_STATE_RUNNING):
        assert time.monotonic() < deadline, f"scan {started.scan_id} not done"
        time.sleep(0.05)
        done = client.get_scan(started.scan_id)
    assert done.state == scans_pb2.SCAN_STATE_DONE, done
    rules = {f.rule for page in client.findings(started.scan_id) for f in page.findings}
    return done.verdict.ruleset_digest, rules


def test_a_ruleset_activated_on_one_appliance_runs_on_both_and_rolls_back_from_the_other(
    tmp_path: Path, url: str, services: list[Service], observer: PostgresDatabase
) -> None:
    a = start(tmp_path, url, services, "a", "esx1", poll=3600)  # only NOTIFY wakes the followers
    b = start(tmp_path, url, services, "b", "esx2", poll=3600)
    default = wait_rollout(observer, "both on the default", lambda s: len(s.appliances) == 2 and all(
        x.state == "current" for x in s.appliances))  # fmt: skip
    marker = f"AVSCAN-FLEET-MARKER-{uuid.uuid4().hex}"
    target = tmp_path / "target"
    target.mkdir()
    (target / "payload.bin").write_bytes(b"\x00" * 100 + marker.encode() + b"\x00" * 100)
    with a.client() as soc_a, b.client() as soc_b:
        checked = soc_b.validate_ruleset(marker_rules(marker))
        pushed = soc_a.push_ruleset(marker_rules(marker), name="marker").ruleset
        soc_a.activate(digest=pushed.digest)
        both = wait_rollout(observer, "both on the new set", lambda s: set(running(s).values()) == {pushed.digest})
        listed_on_b = [r.digest for r in soc_b.list_rulesets() if r.active]
        view_on_b = soc_b.ruleset_rollout()
        used, rules = scan_rules(soc_b, target)
        assert (used, rules) == (pushed.digest, {"fleet_marker"}), "b scans with the set pushed on a"

        back = soc_b.rollback()
        rolled = wait_rollout(observer, "both rolled back", lambda s: set(running(s).values()) == {default.active})
        used_after, rules_after = scan_rules(soc_b, target)
    assert both.active == pushed.digest and listed_on_b == [pushed.digest]
    assert [(x.appliance, x.state, x.running_digest) for x in view_on_b.appliances] == [
        ("a", signatures_pb2.ROLLOUT_STATE_CURRENT, pushed.digest),
        ("b", signatures_pb2.ROLLOUT_STATE_CURRENT, pushed.digest),
    ]
    assert back.digest == default.active and rolled.active == default.active
    assert (used_after, rules_after) == (default.active, set())
    with observer.connection() as conn:
        history = conn.execute("SELECT action, digest FROM ruleset_activations ORDER BY generation").fetchall()
    assert history == [("activate", default.active), ("activate", pushed.digest), ("rollback", default.active)]
    with observer.connection() as conn:
        validations = conn.execute("SELECT digest, appliance, actor, ok FROM ruleset_validations").fetchall()
    assert checked.ok and validations == [(pushed.digest, "b", "local", True)], "b's validation, for the fleet"


def test_an_appliance_that_cannot_compile_keeps_its_ruleset_and_the_fleet_view_says_so(
    tmp_path: Path, url: str, services: list[Service], observer: PostgresDatabase
) -> None:
    a = start(tmp_path, url, services, "a", "esx1")
    b = start(tmp_path, url, services, "b", "esx2", "[signatures]\nmax_ruleset_bytes = 30000\n")  # a small appliance
    default = wait_rollout(observer, "both on the default", lambda s: len(s.appliances) == 2 and all(
        x.state == "current" for x in s.appliances))  # fmt: skip
    marker = f"AVSCAN-FLEET-MARKER-{uuid.uuid4().hex}"
    target = tmp_path / "target"
    target.mkdir()
    (target / "payload.bin").write_bytes(marker.encode())
    with a.client() as soc_a, b.client() as soc_b:
        pushed = soc_a.push_ruleset(marker_rules(marker, padding=40_000), name="big").ruleset
        soc_a.activate(digest=pushed.digest)
        split = wait_rollout(observer, "b failed", lambda s: {x.appliance: x.state for x in s.appliances} == {
            "a": "current", "b": "failed"})  # fmt: skip
        used_on_b, rules_on_b = scan_rules(soc_b, target)
        used_on_a, rules_on_a = scan_rules(soc_a, target)
        shown = CliRunner().invoke(cli, ["--config", str(tmp_path / "b.toml"), "fleet"])
        soc_view = soc_a.ruleset_rollout()  # the SOC's view, from either appliance
        audit = [(r.actor, r.action, r.subject) for r in observer.audit_log(50)]
        soc_a.rollback()
        healed = wait_rollout(observer, "b current again, its failure cleared", lambda s: all(
            x.state == "current" and not x.error for x in s.appliances))  # fmt: skip
        with observer.connection() as conn:  # a pointer move whose NOTIFY was lost: the poll catches it
            conn.execute(
                "UPDATE ruleset_pointer SET generation = generation + 1, doc = %s",
                (pointer_to_bytes(ActivePointer(Activation(pushed.digest, pushed.version, "test", 0.0))).decode(),),
            )
        polled = wait_rollout(observer, "the poll", lambda s: s.active == pushed.digest and [
            x.state for x in s.appliances] == ["current", "failed"])  # fmt: skip
    b_status = next(x for x in split.appliances if x.appliance == "b")
    assert b_status.running == default.active and b_status.wanted == pushed.digest
    assert "30000" in b_status.error, b_status.error
    assert (used_on_b, rules_on_b) == (default.active, set()), "b scans with the set it kept, and says so"
    assert (used_on_a, rules_on_a) == (pushed.digest, {"fleet_marker"})
    assert shown.exit_code == 0, shown.output
    b_line = next(line for line in shown.output.splitlines() if line.startswith("b "))
    assert default.active in b_line and "failed" in b_line and pushed.digest in b_line
    assert f"fleet ruleset: {pushed.digest}" in shown.output
    assert soc_view.active_digest == pushed.digest
    assert [(x.appliance, x.state, x.running_digest) for x in soc_view.appliances] == [
        ("a", signatures_pb2.ROLLOUT_STATE_CURRENT, pushed.digest),
        ("b", signatures_pb2.ROLLOUT_STATE_FAILED, default.active),
    ]
    assert "30000" in soc_view.appliances[1].error
    assert ("b", "ruleset.follow_failed", pushed.digest) in audit
    assert pushed.digest in b.output() and "cannot be activated here" in b.output()
    assert healed.active == default.active and healed.appliances[1].error == ""
    assert running(polled) == {"a": pushed.digest, "b": default.active}
