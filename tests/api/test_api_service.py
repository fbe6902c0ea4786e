"""Bad requests get the right status naming the field; health; reflection; graceful stop."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support.inproc import ServerThread
from support.samples import sample_dir, sparse_image

from scanner.api.client import Client, files_target, memory_target
from scanner.api.status import field_violations
from scanner.state.db import Database
from scanner.v1 import scans_pb2

Call = Callable[[Client, Path], object]

BAD_REQUESTS: dict[str, tuple[Call, grpc.StatusCode, str]] = {
    "missing target": (
        lambda c, _: c.scans.StartScan(scans_pb2.StartScanRequest(), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "target",
    ),
    "empty file path": (
        lambda c, _: c.start_scan(files_target("")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "target.files.paths",
    ),
    "unknown memory format": (
        lambda c, tmp: c.start_scan(memory_target(str(sparse_image(tmp / "m.raw", 1 << 20)), "vmsn9")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "target.memory.format",
    ),
    "empty scan_id (get)": (lambda c, _: c.get_scan(""), grpc.StatusCode.INVALID_ARGUMENT, "scan_id"),
    "empty scan_id (watch)": (
        lambda c, _: list(c.watch("", timeout=10)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "scan_id",
    ),
    "empty scan_id (cancel)": (lambda c, _: c.cancel(""), grpc.StatusCode.INVALID_ARGUMENT, "scan_id"),
    "bad scans page token": (
        lambda c, _: c.list_scans(page_token="not-a-token"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    ),
    "bad findings page token": (
        lambda c, _: c.scans.ListFindings(
            scans_pb2.ListFindingsRequest(scan_id=_some_scan(c, _), page_token="-1"), timeout=10
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    ),
    "bad pinned ruleset": (
        lambda c, tmp: c.start_scan(files_target(str(tmp)), ruleset_digest="md5:00"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "options.ruleset_digest",
    ),
}


def _some_scan(client: Client, tmp: Path) -> str:
    return client.start_scan(files_target(str(sample_dir(tmp / "s")))).scan_id


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_names_the_field_and_the_server_keeps_serving(case: str, client: Client, tmp_path: Path) -> None:
    call, code, field = BAD_REQUESTS[case]

    with pytest.raises(grpc.RpcError) as caught:
        call(client, tmp_path)

    assert caught.value.code() == code
    assert caught.value.details().startswith(f"{field}:")
    assert [f for f, _ in field_violations(caught.value)] == [field]
    assert client.list_rulesets(), "the server still answers"


@pytest.mark.parametrize("method", ["get_scan", "cancel"])
def test_unknown_scan_id_is_not_found(method: str, client: Client) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        getattr(client, method)("0123456789abcdef")

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "0123456789abcdef" in caught.value.details()
    with pytest.raises(grpc.RpcError) as listed:
        client.findings("0123456789abcdef")
    assert listed.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(server: ServerThread) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [answer] = list(stub.ServerReflectionInfo(iter([request]), timeout=10))

    names = {s.name for s in answer.list_services_response.service}
    assert {"scanner.v1.ScanService", "scanner.v1.SignatureService", "grpc.health.v1.Health"} <= names


def health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_stop_goes_not_serving_first_and_records_running_scans_interrupted(
    server: ServerThread, client: Client, tmp_path: Path
) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health(server.address) == serving
    assert health(server.address, "scanner.v1.ScanService") == serving
    image = sparse_image(tmp_path / "guest.raw", 2 * 1024**3)
    scan = client.start_scan(memory_target(str(image)))
    deadline = time.monotonic() + 30
    while client.get_scan(scan.scan_id).state != scans_pb2.SCAN_STATE_RUNNING:
        assert time.monotonic() < deadline, "the scan never started"
        time.sleep(0.02)

    stopping = server.begin_stop(grace=1.5)
    deadline = time.monotonic() + 30
    while health(server.address) != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert time.monotonic() < deadline, "health never went NOT_SERVING"
    assert not stopping.done()  # NOT_SERVING came first: the stop is still in its grace period
    assert client.get_scan(scan.scan_id).state == scans_pb2.SCAN_STATE_RUNNING
    with pytest.raises(grpc.RpcError) as caught:
        client.start_scan(files_target(str(tmp_path)))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    stopping.result(30)
    server.stop()
    db = Database(server.config.state_dir / "state.sqlite3")
    try:
        record = db.get_scan(scan.scan_id)
    finally:
        db.close()
    assert (record.state, record.attempts, record.verdict) == ("INTERRUPTED", 1, None)
