"""SignatureService over a real channel: push (chunked), validate, activate, list, roll back."""

from __future__ import annotations

import grpc
import pytest
from support.samples import BROKEN_RULE, default_files, marker, marker_rule

from scanner.api.client import CHUNK, Client, files_target
from scanner.api.status import field_violations
from scanner.v1 import signatures_pb2, verdict_pb2


def newer_set(padding: int = 0) -> list[tuple[str, bytes]]:
    """The default rules plus ``Marker_newer`` (the rule that exists only in the newer set)."""
    return [*default_files(), ("extra/newer.yar", marker_rule("newer", padding))]


def test_validate_names_file_and_line_of_a_broken_rule(client: Client) -> None:
    response = client.validate_ruleset([("team/broken.yar", BROKEN_RULE)])

    assert not response.ok
    errors = [d for d in response.diagnostics if d.severity == signatures_pb2.DIAGNOSTIC_SEVERITY_ERROR]
    assert [(d.file, d.line) for d in errors] == [("team/broken.yar", 4)]
    assert "undefined_thing" in errors[0].message


def test_push_of_a_broken_rule_is_refused_with_bad_request_details(client: Client) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        client.push_ruleset([*default_files(), ("team/broken.yar", BROKEN_RULE)], "broken")

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(caught.value)
    assert [field for field, _ in violations] == ["team/broken.yar:4"]
    assert violations[0][1].startswith("error:")
    assert len(client.list_rulesets()) == 1, "a refused push must store nothing"


def test_chunked_push_activate_and_list(client: Client) -> None:
    default = client.list_rulesets()[0]
    files = newer_set(padding=CHUNK + 50_000)
    assert len(files[-1][1]) > CHUNK, "the rule file must span several client chunks"

    pushed = client.push_ruleset(files, "newer", "default plus a marker rule").ruleset

    assert pushed.version == 2 and not pushed.active
    assert pushed.size_bytes == sum(len(data) for _, data in files)
    assert pushed.rule_count == default.rule_count + 1
    assert client.validate_ruleset(files).digest == pushed.digest
    again = client.push_ruleset(files, "newer-again").ruleset
    assert (again.version, again.digest) == (2, pushed.digest), "identical content is the same version"

    active = client.activate(digest=pushed.digest)

    assert active.digest == pushed.digest and active.active
    listed = client.list_rulesets()
    assert [r.version for r in listed] == [2, 1], "ListRulesets lists newest first"
    assert [r.active for r in listed] == [True, False]
    assert client.activate(version=1).version == 1
    assert [r.active for r in client.list_rulesets()] == [False, True]


def scan_marker(client: Client, path: str) -> tuple[set[str], str, int]:
    done = client.wait(client.start_scan(files_target(path)).scan_id, timeout=60)
    rules = {f.rule for page in client.findings(done.scan_id) for f in page.findings}
    return rules, done.verdict.ruleset_digest, done.verdict.kind


def test_rollback_makes_scans_use_the_previous_ruleset(client: Client, tmp_path) -> None:
    sample = tmp_path / "dropper.sh"
    sample.write_bytes(b"#!/bin/sh\n# " + marker("newer") + b"\nexit 0\n")
    default = client.list_rulesets()[0]
    newer = client.push_ruleset(newer_set(), "newer").ruleset
    client.activate(digest=newer.digest)
    assert scan_marker(client, str(sample)) == (
        {"Marker_newer"},
        newer.digest,
        verdict_pb2.VERDICT_KIND_MALICIOUS,
    )

    back = client.rollback()

    assert back.digest == default.digest
    assert {r.digest: r.active for r in client.list_rulesets()} == {newer.digest: False, default.digest: True}
    assert scan_marker(client, str(sample)) == (set(), default.digest, verdict_pb2.VERDICT_KIND_CLEAN)


def test_rollback_without_history_is_a_failed_precondition(client: Client) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        client.rollback()

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "rollback" in caught.value.details()
