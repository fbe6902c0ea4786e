"""The signature store: push, validate, activate, rollback, list; crash safety on disk."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from scanner.errors import FailedPrecondition, InvalidArgument, NotFound, RulesetError
from scanner.rulesets.model import RulesetFile
from scanner.rulesets.store import RulesetStore

from .samples import rule_file

if TYPE_CHECKING:
    from .conftest import AuditLog

SET_A = [rule_file("a.yar", "rule_a", "marker-alpha")]
SET_B = [rule_file("b.yar", "rule_b", "marker-bravo"), rule_file("x/c.yar", "rule_c", "charlie")]
SET_C = [rule_file("c.yar", "rule_c", "marker-charlie")]


def rule_names(store: RulesetStore, data: bytes) -> list[str]:
    loaded = store.active()
    assert loaded is not None
    return [m.rule for m in loaded.rules.match(data=data, externals=dict(loaded.externals))]


def test_push_stores_a_numbered_ruleset(store: RulesetStore, audit: AuditLog) -> None:
    info = store.push(SET_B, "two rules", "for tests", "alice")
    assert (info.version, info.rule_count, info.file_count, info.active) == (1, 2, 2, False)
    assert info.size_bytes == sum(len(f.data) for f in SET_B)
    assert (info.name, info.description, info.pushed_by) == ("two rules", "for tests", "alice")
    stored = store.root / "sets" / info.digest.removeprefix("sha256:")
    manifest = json.loads((stored / "manifest.json").read_bytes())
    assert manifest["version"] == 1
    assert [f["path"] for f in manifest["files"]] == ["b.yar", "x/c.yar"]
    assert (stored / "sources" / "x" / "c.yar").read_bytes() == SET_B[1].data
    assert store.sources(info.digest) == SET_B
    assert audit.records[-1][:3] == ("alice", "ruleset.push", info.digest)


def test_pushing_the_same_content_again_returns_the_stored_version(tmp_path: Path) -> None:
    store = RulesetStore(tmp_path)
    first = store.push(SET_A, "a", "", "alice")
    second = store.push(list(reversed(SET_A)), "renamed", "", "bob")
    again = RulesetStore(tmp_path).push(SET_A, "a", "", "carol")
    assert first.digest == second.digest == again.digest
    assert first.version == second.version == again.version == 1
    assert len(list((tmp_path / "sets").iterdir())) == 1


def test_versions_only_grow_across_restarts(tmp_path: Path) -> None:
    assert RulesetStore(tmp_path).push(SET_A, "a", "", "u").version == 1
    assert RulesetStore(tmp_path).push(SET_B, "b", "", "u").version == 2
    shutil.rmtree(tmp_path / "sets" / RulesetStore(tmp_path).get(2).digest[7:])
    assert RulesetStore(tmp_path).push(SET_C, "c", "", "u").version == 3


def test_concurrent_pushes_of_one_ruleset_store_it_once(store: RulesetStore) -> None:
    versions: list[int] = []
    threads = [
        threading.Thread(target=lambda: versions.append(store.push(SET_A, "a", "", "u").version)) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert versions == [1, 1, 1, 1]


def test_a_broken_push_stores_nothing(store: RulesetStore) -> None:
    bad = RulesetFile("rules/bad.yar", b"rule bad {\n  condition:\n    nope\n}\n")
    with pytest.raises(RulesetError) as info:
        store.push([*SET_A, bad], "bad", "", "u")
    assert [(d.file, d.line) for d in info.value.diagnostics] == [("rules/bad.yar", 3)]
    assert store.list() == []
    assert list((store.root / "sets").iterdir()) == []
    assert list((store.root / "tmp").iterdir()) == []


def test_a_ruleset_without_rules_is_refused(store: RulesetStore) -> None:
    with pytest.raises(RulesetError, match="no rules"):
        store.push([RulesetFile("empty.yar", b"// nothing\n")], "empty", "", "u")


def test_bad_names_are_refused(store: RulesetStore) -> None:
    with pytest.raises(InvalidArgument):
        store.push(SET_A, " ", "", "u")
    with pytest.raises(InvalidArgument):
        store.push(SET_A, "a", "x" * 5000, "u")


def test_validate_returns_diagnostics_and_stores_nothing(store: RulesetStore) -> None:
    slow = RulesetFile("slow.yar", b"rule s {\n strings: $a = { 00 ?? }\n condition: $a\n}\n")
    bad = RulesetFile("bad.yar", b"rule b { condition: nope }\n")
    diags = store.validate([slow, bad])
    assert {(d.severity, d.file, d.line) for d in diags} == {
        ("warning", "slow.yar", 2),
        ("error", "bad.yar", 1),
    }
    assert next(d for d in diags if d.file == "slow.yar").slow_pattern
    assert store.validate(SET_A) == []
    assert store.list() == []


def test_activate_rollback_and_list(store: RulesetStore, audit: AuditLog) -> None:
    assert store.active() is None
    a = store.push(SET_A, "a", "", "u")
    b = store.push(SET_B, "b", "", "u")
    assert store.activate(1, "alice").active
    assert rule_names(store, b"..marker-alpha..") == ["rule_a"]
    store.activate(b.digest, "alice")
    assert rule_names(store, b"..marker-alpha..marker-bravo") == ["rule_b"]
    assert [(i.version, i.active) for i in store.list()] == [(1, False), (2, True)]
    back = store.rollback("bob")
    assert (back.digest, back.active) == (a.digest, True)
    assert rule_names(store, b"marker-alpha") == ["rule_a"]
    with pytest.raises(FailedPrecondition, match="no previously active"):
        store.rollback("bob")
    assert audit.actions()[-3:] == ["ruleset.activate", "ruleset.activate", "ruleset.rollback"]


def test_rollback_with_nothing_active_is_a_failed_precondition(store: RulesetStore) -> None:
    with pytest.raises(FailedPrecondition):
        store.rollback("u")


def test_get_by_digest_or_version(store: RulesetStore) -> None:
    info = store.push(SET_A, "a", "", "u")
    assert store.get(info.digest) == store.get(1) == store.get("1") == store.get(info.digest[7:])
    with pytest.raises(NotFound):
        store.get(7)
    with pytest.raises(NotFound):
        store.get("sha256:" + "0" * 64)
    with pytest.raises(InvalidArgument):
        store.get("sha256:../../etc")


def test_scans_in_flight_keep_their_ruleset(store: RulesetStore) -> None:
    store.push(SET_A, "a", "", "u")
    store.push(SET_C, "c", "", "u")
    store.activate(1, "u")
    in_flight = store.active()
    store.activate(2, "u")
    assert in_flight is not None
    assert [m.rule for m in in_flight.rules.match(data=b"marker-alpha")] == ["rule_a"]
    assert rule_names(store, b"marker-alpha marker-charlie") == ["rule_c"]


# -- crash safety ---------------------------------------------------------------------------


def test_interrupted_pointer_write_leaves_the_old_pointer(tmp_path: Path) -> None:
    store = RulesetStore(tmp_path)
    store.push(SET_A, "a", "", "u")
    store.push(SET_C, "c", "", "u")
    store.activate(1, "u")
    # A crash while writing the temp file: a truncated temp file is left next to the pointer.
    (tmp_path / "active.json.tmp.deadbeef").write_bytes(b'{"format": 1, "curr')
    reopened = RulesetStore(tmp_path)
    assert not list(tmp_path.glob("active.json.tmp.*"))
    assert rule_names(reopened, b"marker-alpha") == ["rule_a"]


def test_crash_before_the_rename_leaves_the_old_pointer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RulesetStore(tmp_path)
    store.push(SET_A, "a", "", "u")
    store.push(SET_C, "c", "", "u")
    store.activate(1, "u")

    def crash(src: str, dst: str) -> None:
        raise SystemExit(f"power cut before renaming {src} to {dst}")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(SystemExit):
        store.activate(2, "u")
    monkeypatch.undo()
    reopened = RulesetStore(tmp_path)
    assert rule_names(reopened, b"marker-alpha marker-charlie") == ["rule_a"]
    assert not list(tmp_path.glob("active.json.tmp.*"))


def test_interrupted_push_is_cleaned_up_on_open(tmp_path: Path) -> None:
    RulesetStore(tmp_path)
    leftover = tmp_path / "tmp" / "push-999999999-crashed"  # no such process
    (leftover / "sources").mkdir(parents=True)
    (leftover / "compiled.yarc").write_bytes(b"half")
    store = RulesetStore(tmp_path)
    assert not leftover.exists()
    assert store.list() == []
    assert store.push(SET_A, "a", "", "u").version == 1


def test_a_corrupt_pointer_is_an_error_not_nothing_active(tmp_path: Path) -> None:
    store = RulesetStore(tmp_path)
    store.push(SET_A, "a", "", "u")
    store.activate(1, "u")
    (tmp_path / "active.json").write_bytes(b'{"format": 1, "cur')
    reopened = RulesetStore(tmp_path)
    with pytest.raises(FailedPrecondition, match="pointer is corrupt"):
        reopened.active()
    with pytest.raises(FailedPrecondition):
        reopened.ensure_default(Path(__file__).resolve().parents[2] / "signatures")
    assert [i.version for i in reopened.list()] == [1]  # nothing else was pushed
    reopened.activate(1, "operator")  # an explicit activation repairs it
    assert rule_names(reopened, b"marker-alpha") == ["rule_a"]


def test_a_pointer_to_a_missing_ruleset_fails_clearly(tmp_path: Path) -> None:
    store = RulesetStore(tmp_path)
    info = store.push(SET_A, "a", "", "u")
    store.activate(1, "u")
    shutil.rmtree(tmp_path / "sets" / info.digest[7:])
    with pytest.raises(FailedPrecondition, match=f"active ruleset {info.digest}"):
        RulesetStore(tmp_path).active()


def test_a_corrupted_compiled_file_fails_verification(tmp_path: Path) -> None:
    store = RulesetStore(tmp_path)
    info = store.push(SET_A, "a", "", "u")
    store.push(SET_C, "c", "", "u")
    store.activate(1, "u")
    compiled = tmp_path / "sets" / info.digest[7:] / "compiled.yarc"
    data = bytearray(compiled.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(compiled, 0o644)
    compiled.write_bytes(bytes(data))
    reopened = RulesetStore(tmp_path)
    with pytest.raises(FailedPrecondition, match="fail verification"):
        reopened.active()
    with pytest.raises(FailedPrecondition, match="fail verification"):
        reopened.load(info.digest)
    reopened.activate(2, "u")
    with pytest.raises(FailedPrecondition, match="fail verification"):
        reopened.rollback("u")  # never rolls back onto a ruleset that does not verify
    assert rule_names(reopened, b"marker-charlie") == ["rule_c"]


def test_a_broken_manifest_is_reported_for_its_ruleset_only(tmp_path: Path) -> None:
    store = RulesetStore(tmp_path)
    a = store.push(SET_A, "a", "", "u")
    store.push(SET_C, "c", "", "u")
    store.activate(2, "u")
    (tmp_path / "sets" / a.digest[7:] / "manifest.json").write_bytes(b"{not json")
    reopened = RulesetStore(tmp_path)
    assert [i.version for i in reopened.list()] == [2]
    with pytest.raises(FailedPrecondition, match="manifest unreadable"):
        reopened.get(a.digest)
    assert rule_names(reopened, b"marker-charlie") == ["rule_c"]
    assert reopened.push(SET_B, "b", "", "u").version == 3  # version 1 is never reused


def test_opening_the_store_keeps_another_live_process_push(tmp_path: Path) -> None:
    RulesetStore(tmp_path)
    in_flight = tmp_path / "tmp" / f"push-{os.getppid()}-busy"  # the parent process is alive
    in_flight.mkdir()
    RulesetStore(tmp_path)
    assert in_flight.exists()
