"""The API contract SOC tooling scripts against: opaque page tokens, paths checked up front and
named, idempotency keys that refuse a different request, ErrorInfo on every error, non-UTF-8
names carried with escapes, reflection v1 and v1alpha."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2
from support.samples import eicar, sample_dir

from scanner.api.client import files_target
from scanner.api.status import error_reason, field_violations
from scanner.v1 import scans_pb2, verdict_pb2


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


@pytest.mark.parametrize("token", ["²", "42", "garbage!", "eyJ2IjoxfQ", "x" * 600])
def test_garbage_page_tokens_are_invalid_argument_never_internal(client, token):
    error = rpc_error(client.list_scans, page_token=token)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(error)] == ["page_token"]
    assert error_reason(error) == "INVALID_ARGUMENT"


def test_list_scans_pages_through_every_scan_with_opaque_tokens(client, tmp_path):
    target = sample_dir(tmp_path / "samples", infected=0, clean=1)
    started = {client.start_scan(files_target(str(target))).scan_id for _ in range(3)}
    seen, token, pages = [], "", 0
    while True:
        page = client.list_scans(page_size=1, page_token=token)
        seen += [s.scan_id for s in page.scans]
        pages += 1
        token = page.next_page_token
        if not token:
            break
        assert not token.isdigit()
    assert set(seen) == started and len(seen) == 3 and pages == 3
    other = rpc_error(
        client.list_scans,
        page_size=1,
        page_token=client.list_scans(page_size=1).next_page_token,
        state=scans_pb2.SCAN_STATE_DONE,
    )
    assert other.code() == grpc.StatusCode.INVALID_ARGUMENT  # a token is bound to its filter


def test_nul_relative_and_missing_paths_are_refused_naming_the_field(client, tmp_path):
    good = sample_dir(tmp_path / "samples", infected=1, clean=0)
    cases = {
        "target.files.paths[1]": [str(good), str(good) + "\0/etc/shadow"],
        "target.files.paths[0]": ["relative/dir"],
    }
    for field, paths in cases.items():
        error = rpc_error(client.start_scan, files_target(*paths))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, paths
        assert [f for f, _ in field_violations(error)] == [field]
        assert ("NUL byte" if "\0" in paths[-1] else "absolute") in error.details()
    missing = rpc_error(client.start_scan, files_target(str(tmp_path / "nowhere")))
    assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no such file" in missing.details()
    assert client.list_scans().scans == []  # nothing half-started
    scan = client.wait(client.start_scan(files_target(str(good))).scan_id, timeout=60)
    assert scan.verdict.kind == verdict_pb2.VERDICT_KIND_MALICIOUS  # the valid path alone loses nothing


def test_request_id_reuse_with_a_different_request_is_already_exists(client, tmp_path):
    one = sample_dir(tmp_path / "one", infected=0, clean=1)
    two = sample_dir(tmp_path / "two", infected=0, clean=1)
    first = client.start_scan(files_target(str(one)), request_id="req-1")
    assert client.start_scan(files_target(str(one)), request_id="req-1").scan_id == first.scan_id
    error = rpc_error(client.start_scan, files_target(str(two)), request_id="req-1")
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(error) == "ALREADY_EXISTS"
    assert error_reason(rpc_error(client.get_scan, "no-such-scan")) == "NOT_FOUND"


def test_non_utf8_names_are_scanned_and_listed_with_escapes(client, tmp_path):
    root = tmp_path / "names"
    root.mkdir()
    with open(os.path.join(os.fsencode(root), b"bad\xff\xfename.com"), "wb") as f:
        f.write(eicar())
    scan_id = client.start_scan(files_target(str(root))).scan_id
    done = client.wait(scan_id, timeout=60)
    assert done.verdict.kind == verdict_pb2.VERDICT_KIND_MALICIOUS
    assert client.get_scan(scan_id).scan_id == scan_id
    (finding,) = [f for page in client.findings(scan_id) for f in page.findings]
    assert finding.unit == f"{root}/bad\\xff\\xfename.com"
    assert [s.scan_id for s in client.list_scans().scans] == [scan_id]


@pytest.mark.parametrize("package", ["grpc.reflection.v1", "grpc.reflection.v1alpha"])
def test_reflection_v1_and_v1alpha_list_the_services(server, package):
    with grpc.insecure_channel(server.address) as channel:
        call = channel.stream_stream(
            f"/{package}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        answers = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
        symbol = reflection_pb2.ServerReflectionRequest(file_containing_symbol="scanner.v1.ScanService")
        files = list(call(iter([symbol]), timeout=10))
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"scanner.v1.ScanService", "scanner.v1.SignatureService", "scanner.v1.VCenterService"} <= names
    assert files[0].file_descriptor_response.file_descriptor_proto


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def buf() -> str:
    """buf (the CLI CI lints the protos with), installed from npm as .ci/run does when absent."""
    path = REPO / ".cache" / "buf" / "node_modules" / ".bin" / "buf"
    if not path.exists():
        subprocess.run(["npm", "install", "--silent", "--prefix", str(path.parents[2]), "@bufbuild/buf"], check=True)
    return str(path)


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
def test_buf_curl_lists_and_calls_through_reflection(server, buf, protocol):
    base = ["--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", protocol]
    url = f"http://{server.address}"
    listed = subprocess.run(
        [buf, "curl", *base, "--list-methods", url], capture_output=True, text=True, timeout=60, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert "scanner.v1.ScanService/StartScan" in listed.stdout.split()
    call = [buf, "curl", *base, "-d", '{"pageToken": "\u00b2"}', f"{url}/scanner.v1.ScanService/ListScans"]
    refused = subprocess.run(call, capture_output=True, text=True, timeout=60, check=False)
    answer = json.loads(refused.stdout or refused.stderr)
    assert answer["code"] == "invalid_argument"
    assert {d["type"] for d in answer["details"]} == {"google.rpc.ErrorInfo", "google.rpc.BadRequest"}


def test_one_damaged_record_never_breaks_a_listing(server, client, tmp_path):
    import sqlite3

    target = sample_dir(tmp_path / "samples", infected=0, clean=1)
    ids = [client.wait(client.start_scan(files_target(str(target))).scan_id, timeout=60).scan_id for _ in range(3)]
    with sqlite3.connect(server.config.state_dir / "state.sqlite3") as db:  # damage, as a bad disk or bug would
        db.execute("UPDATE scans SET verdict = '{not json', target_params = 'x' WHERE id = ?", (ids[1],))
        db.execute("UPDATE scans SET state = 'FROM_THE_FUTURE' WHERE id = ?", (ids[2],))
    listed = client.list_scans().scans
    assert sorted(s.scan_id for s in listed) == sorted(ids)
    damaged = client.get_scan(ids[1])
    assert damaged.scan_id == ids[1] and not damaged.HasField("verdict")
    assert client.get_scan(ids[2]).state == scans_pb2.SCAN_STATE_UNSPECIFIED
    assert client.get_scan(ids[0]).verdict.kind == verdict_pb2.VERDICT_KIND_CLEAN
