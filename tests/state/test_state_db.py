"""The state on both backends (SQLite, PostgreSQL): scan lifecycle, request_id dedupe, findings
round trip, audit trail."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support.samples import default_files, marker_rule, sample_dir, sparse_image

from scanner.app import App
from scanner.config import Config
from scanner.engine.settings import EngineSettings
from scanner.errors import NotFound
from scanner.fleet.settings import FleetSettings
from scanner.rulesets.model import RulesetFile
from scanner.state.db import Database
from scanner.state.postgres import PostgresDatabase
from scanner.state.settings import StateSettings
from scanner.targets import TargetSpec
from scanner.verdicts import Coverage, Finding, Gap, GapKind, StringMatch, Verdict, VerdictKind
from tests.support.postgres import fresh_database, postgres

__all__ = ["postgres"]

SPEC = TargetSpec("files", {"paths": ["/srv/data"]})


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    """Opens the state again on the same storage, as a restarted appliance would."""
    if request.param == "sqlite":
        return lambda: Database(tmp_path / "state" / "state.sqlite3")
    url = fresh_database(request.getfixturevalue("postgres"))
    return lambda: PostgresDatabase(url, host="h1", appliance="a1")


@pytest.fixture
def db(opener: Callable[[], Any]) -> Iterator[Any]:
    database = opener()
    yield database
    database.close()


def finding(unit: str, data: bytes) -> Finding:
    return Finding(
        rule="Marker_x",
        namespace="x/one.yar",
        tags=("t1", "t2"),
        meta={"severity": 90, "live": True, "by": "me"},
        unit=unit,
        unit_kind="file",
        offset=7,
        address=7,
        strings=(StringMatch("$m", 7, 7, len(data), data),),
        strings_truncated=True,
        context={"sha256": "ab" * 32},
    )


def test_create_resume_and_finish(db: Database, opener: Callable[[], Any]) -> None:
    record, created = db.create_scan(SPEC, {"unit_timeout_seconds": 5}, "alice")
    assert created and record.state == "QUEUED" and record.attempts == 0
    assert [r.id for r in db.resumable()] == [record.id]

    db.mark_running(record.id, "sha256:" + "1" * 64)
    db.close()
    reopened = opener()  # a restart sees the same row
    try:
        running = reopened.get_scan(record.id)
        assert (running.state, running.attempts, running.ruleset_digest) == (
            "RUNNING",
            1,
            "sha256:" + "1" * 64,
        )
        assert running.options == {"unit_timeout_seconds": 5} and running.target == SPEC
        assert [r.id for r in reopened.resumable()] == [record.id]

        verdict = Verdict(
            VerdictKind.MALICIOUS,
            running.ruleset_digest,
            Coverage(bytes_total=10, bytes_scanned=10),
            findings=(finding("/srv/data/a", b"x"),),
        )
        reopened.finish_scan(record.id, "DONE", verdict)
        done = reopened.get_scan(record.id)
        assert done.state == "DONE" and done.finished_at and done.findings_count == 1
        assert done.verdict is not None and done.verdict.kind is VerdictKind.MALICIOUS
        assert reopened.resumable() == []
    finally:
        reopened.close()


def test_request_id_dedupe(db: Database) -> None:
    first, created = db.create_scan(SPEC, {}, "alice", request_id="ticket-1")
    again, created_again = db.create_scan(TargetSpec("files", {"paths": ["/other"]}), {}, "bob", request_id="ticket-1")
    other, _ = db.create_scan(SPEC, {}, "alice", request_id="ticket-2")
    anonymous = [db.create_scan(SPEC, {}, "alice")[0] for _ in range(2)]

    assert created and not created_again
    assert again.id == first.id and again.requested_by == "alice"
    assert len({first.id, other.id, *(a.id for a in anonymous)}) == 4, "empty request ids never collide"
    assert len(db.list_scans(100, None, None)) == 4


def test_findings_round_trip_with_raw_bytes(db: Database) -> None:
    record, _ = db.create_scan(SPEC, {}, "alice")
    raw = bytes(range(256))[:64]  # NUL, high bytes, invalid UTF-8
    gap = Gap(GapKind.UNREADABLE, "/srv/data/b", "EIO", 4096, 512)
    stored = tuple(finding(f"/srv/data/{i}", raw) for i in range(3))
    verdict = Verdict(
        VerdictKind.MALICIOUS,
        "sha256:" + "2" * 64,
        Coverage(bytes_total=1000, bytes_scanned=488, bytes_unreadable=512, gaps=(gap,)),
        findings=stored,
        started_at=1.5,
        finished_at=2.5,
        details={"memory.format": "raw"},
    )

    db.finish_scan(record.id, "DONE", verdict)

    assert db.findings(record.id) == list(stored)
    assert db.findings(record.id, offset=1, limit=1) == [stored[1]]
    back = db.get_scan(record.id).verdict
    assert back is not None
    assert back.coverage.gaps == (gap,) and back.coverage.bytes_unreadable == 512
    assert (back.ruleset_digest, back.details, back.started_at) == (
        verdict.ruleset_digest,
        {"memory.format": "raw"},
        1.5,
    )


def test_unknown_scan_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound, match="nope"):
        db.get_scan("nope")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_audit_records_push_activate_rollback_scan_start_and_cancel(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    slow = EngineSettings(threads=1, chunk_size=64 * 1024, overlap=4096, skip_zero_blocks=False)
    config = Config(listen="127.0.0.1:0", state_dir=tmp_path / "state", max_concurrent_scans=1, engine=slow)
    if backend == "postgres":  # the fleet's state and queue: the same audit trail
        url = fresh_database(request.getfixturevalue("postgres"))
        config = replace(config, state=StateSettings(url), fleet=FleetSettings(host="h1"))
    app = App(config)
    try:
        app.prepare()
        files = [RulesetFile(p, d) for p, d in [*default_files(), ("x/one.yar", marker_rule("one"))]]
        pushed = app.store.push(files, "v2", "", "alice")
        app.store.activate(pushed.digest, "alice")
        app.store.rollback("carol")
        image = sparse_image(tmp_path / "m.raw", 1 << 30)  # keeps the one worker busy
        samples = sample_dir(tmp_path / "s")

        async def scans() -> tuple[str, str]:
            await app.scans.start()
            first = await app.scans.submit(TargetSpec("memory", {"path": str(image)}), {}, "bob")
            second = await app.scans.submit(TargetSpec("files", {"paths": [str(samples)]}), {}, "bob")
            await app.scans.cancel(second.id, "dave")
            await app.scans.shutdown(0)
            return first.id, second.id

        first, second = asyncio.run(scans())
        log = [(r.actor, r.action, r.subject) for r in reversed(app.db.audit_log())]
    finally:
        app.close()

    default = log[0][2]
    # in a fleet, the appliance also records that it follows each move of the fleet's pointer
    follow = (lambda digest: [("h1", "ruleset.follow", digest)]) if backend == "postgres" else (lambda _: [])
    assert log == [
        ("system", "ruleset.push", default),
        ("system", "ruleset.activate", default),
        *follow(default),
        ("alice", "ruleset.push", pushed.digest),
        ("alice", "ruleset.activate", pushed.digest),
        *follow(pushed.digest),
        ("carol", "ruleset.rollback", default),
        *follow(default),
        ("bob", "scan.start", first),
        ("bob", "scan.start", second),
        ("dave", "scan.cancel", second),
    ]
