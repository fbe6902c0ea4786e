"""ScanService over a real channel: scan, watch, get, list, page, cancel, ScanBytes, idempotency."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import grpc
import pytest
from support.inproc import ServerThread
from support.samples import (
    EICAR_RULE,
    default_files,
    eicar,
    marker,
    marker_rule,
    sample_dir,
    sparse_image,
)

from scanner.api.client import CHUNK, Client, files_target, memory_target
from scanner.v1 import scans_pb2, verdict_pb2

from .conftest import UPLOAD_LIMIT

GiB = 1024**3


def wait_state(client: Client, scan_id: str, state: int, timeout: float = 30) -> scans_pb2.Scan:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scan = client.get_scan(scan_id)
        if scan.state == state:
            return scan
        time.sleep(0.02)
    raise AssertionError(f"scan {scan_id} never reached {scans_pb2.ScanState.Name(state)}")


def findings(client: Client, scan_id: str) -> list:
    return [f for page in client.findings(scan_id) for f in page.findings]


def test_directory_scan_reports_the_eicar_file_only(client: Client, tmp_path: Path) -> None:
    root = sample_dir(tmp_path / "samples", infected=1, clean=1)

    done = client.wait(client.start_scan(files_target(str(root))).scan_id, timeout=60)

    assert done.state == scans_pb2.SCAN_STATE_DONE
    assert done.verdict.kind == verdict_pb2.VERDICT_KIND_MALICIOUS
    assert done.verdict.coverage.units_total == 2 and done.verdict.coverage.complete
    assert done.verdict.findings_count == 1
    [finding] = findings(client, done.scan_id)
    assert finding.rule == EICAR_RULE
    assert finding.unit == str(root / "eicar0.com")
    assert finding.context["sha256"] == hashlib.sha256(eicar()).hexdigest()
    assert done.attempts == 1 and done.requested_by == "local"


def test_watch_streams_progress_then_findings_then_done(client: Client, tmp_path: Path) -> None:
    root = sample_dir(tmp_path / "samples", infected=3, clean=2)
    scan = client.start_scan(files_target(str(root)))

    events = [e.WhichOneof("event") for e in client.watch(scan.scan_id, timeout=60)]

    assert events[0] == "progress"
    assert events.count("finding") == 3
    assert events[-1] == "done" and events.count("done") == 1
    assert events.index("finding") > 0
    # a late watcher (after the end) still gets every finding, then the final state
    late = [e.WhichOneof("event") for e in client.watch(scan.scan_id, timeout=30)]
    assert late == ["finding"] * 3 + ["done"]


def test_get_list_and_findings_paging(client: Client, tmp_path: Path) -> None:
    root = sample_dir(tmp_path / "samples", infected=5, clean=0)
    ids = [client.wait(client.start_scan(files_target(str(root))).scan_id, timeout=60).scan_id for _ in range(3)]

    got = client.get_scan(ids[0])
    assert got.scan_id == ids[0] and got.verdict.findings_count == 5
    assert list(got.target.files.paths) == [str(root)]

    seen, token, pages = [], "", 0
    while True:
        page = client.list_scans(page_size=2, page_token=token)
        seen += [s.scan_id for s in page.scans]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1], "newest first, each scan exactly once"
    assert pages == 2
    done_only = client.list_scans(state=scans_pb2.SCAN_STATE_DONE)
    assert len(done_only.scans) == 3 and not client.list_scans(state=scans_pb2.SCAN_STATE_QUEUED).scans

    units, token = [], ""
    for _ in range(10):
        request = scans_pb2.ListFindingsRequest(scan_id=ids[0], page_size=2, page_token=token)
        page = client.scans.ListFindings(request, timeout=30)
        assert len(page.findings) <= 2
        units += [f.unit for f in page.findings]
        token = page.next_page_token
        if not token:
            break
    assert sorted(units) == sorted(str(root / f"eicar{i}.com") for i in range(5))


def test_start_scan_with_the_same_request_id_is_idempotent(client: Client, tmp_path: Path) -> None:
    root = sample_dir(tmp_path / "samples")

    first = client.start_scan(files_target(str(root)), request_id="soc-ticket-42")
    second = client.start_scan(files_target(str(root)), request_id="soc-ticket-42")

    assert second.scan_id == first.scan_id and second.request_id == "soc-ticket-42"
    assert [s.scan_id for s in client.list_scans().scans] == [first.scan_id]
    client.wait(first.scan_id, timeout=60)
    third = client.start_scan(files_target(str(root)), request_id="soc-ticket-42")
    assert third.scan_id == first.scan_id and third.state == scans_pb2.SCAN_STATE_DONE


def wait_planned(client: Client, scan_id: str, timeout: float = 30) -> scans_pb2.Scan:
    """The scan once its plan is published (RUNNING comes first; the plan follows on the engine)."""
    deadline = time.monotonic() + timeout
    while (scan := client.get_scan(scan_id)).progress.units_total == 0:
        assert scan.state == scans_pb2.SCAN_STATE_RUNNING, f"scan {scan_id} ended before its plan was shown"
        assert time.monotonic() < deadline, f"scan {scan_id} published no plan within {timeout}s"
        time.sleep(0.05)
    return scan


def test_cancel_a_long_memory_scan_is_incomplete_never_clean(client: Client, tmp_path: Path) -> None:
    image = sparse_image(tmp_path / "guest.raw", 2 * GiB)
    scan = client.start_scan(memory_target(str(image)))
    wait_state(client, scan.scan_id, scans_pb2.SCAN_STATE_RUNNING)
    progress = wait_planned(client, scan.scan_id).progress
    assert (progress.bytes_total, progress.units_total) == (2 * GiB, 1), "a running scan shows its progress"

    client.cancel(scan.scan_id)
    done = client.wait(scan.scan_id, timeout=60)

    assert done.state == scans_pb2.SCAN_STATE_CANCELLED
    assert done.verdict.kind == verdict_pb2.VERDICT_KIND_INCOMPLETE
    coverage = done.verdict.coverage
    assert not coverage.complete and coverage.bytes_scanned < 2 * GiB
    assert coverage.gaps and all(g.kind == verdict_pb2.GAP_KIND_CANCELLED for g in coverage.gaps)
    assert coverage.bytes_skipped > 0
    with pytest.raises(grpc.RpcError) as caught:
        client.cancel(scan.scan_id)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_cancel_a_queued_scan(tmp_path: Path, server: ServerThread, client: Client) -> None:
    images = [sparse_image(tmp_path / f"g{i}.raw", GiB) for i in range(3)]
    scans = [client.start_scan(memory_target(str(p))) for p in images]  # two workers: the third waits

    cancelled = client.cancel(scans[2].scan_id)

    assert cancelled.state == scans_pb2.SCAN_STATE_CANCELLED
    for s in scans[:2]:
        client.cancel(s.scan_id)
    assert client.wait(scans[2].scan_id, timeout=30).state == scans_pb2.SCAN_STATE_CANCELLED


@pytest.mark.slow
def test_a_running_scan_keeps_the_ruleset_it_started_with(client: Client, tmp_path: Path) -> None:
    image = sparse_image(tmp_path / "guest.raw", GiB, {GiB - 4096: marker("newer")})
    old = client.list_rulesets()[0]
    newer = client.push_ruleset([*default_files(), ("extra/newer.yar", marker_rule("newer"))], "newer").ruleset
    scan = client.start_scan(memory_target(str(image)))
    wait_state(client, scan.scan_id, scans_pb2.SCAN_STATE_RUNNING)

    client.activate(digest=newer.digest)
    assert client.get_scan(scan.scan_id).state == scans_pb2.SCAN_STATE_RUNNING, "activation came too late"
    done = client.wait(scan.scan_id, timeout=120)

    assert done.verdict.ruleset_digest == old.digest
    assert done.verdict.kind == verdict_pb2.VERDICT_KIND_CLEAN
    after = client.wait(client.start_scan(memory_target(str(image))).scan_id, timeout=120)
    assert after.verdict.ruleset_digest == newer.digest
    assert [f.rule for f in findings(client, after.scan_id)] == ["Marker_newer"]


def test_scan_bytes_finds_eicar_across_chunks(client: Client) -> None:
    data = b"\0" * (CHUNK - 20) + eicar() + b"\0" * CHUNK  # the string straddles the first chunk edge

    verdict = client.scan_bytes(data, name="upload.bin").verdict

    assert verdict.kind == verdict_pb2.VERDICT_KIND_MALICIOUS
    [finding] = verdict.findings
    assert (finding.rule, finding.unit, finding.offset) == (EICAR_RULE, "upload.bin", CHUNK - 20)
    assert verdict.coverage.bytes_scanned == len(data)


def test_scan_bytes_over_the_limit_is_resource_exhausted(client: Client) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        client.scan_bytes(b"\0" * (UPLOAD_LIMIT + 1))

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "StartScan" in caught.value.details()
    assert client.scan_bytes(b"clean bytes").verdict.kind == verdict_pb2.VERDICT_KIND_CLEAN


def test_a_scan_can_pin_a_stored_ruleset(client: Client, tmp_path: Path) -> None:
    sample = tmp_path / "dropper.sh"
    sample.write_bytes(b"# " + marker("pinned") + b"\n")
    pinned = client.push_ruleset([*default_files(), ("extra/pinned.yar", marker_rule("pinned"))], "pinned").ruleset

    done = client.wait(client.start_scan(files_target(str(sample)), ruleset_digest=pinned.digest).scan_id, 60)
    unpinned = client.wait(client.start_scan(files_target(str(sample))).scan_id, 60)
    missing = "sha256:" + "0" * 64
    with pytest.raises(grpc.RpcError) as unknown:
        client.start_scan(files_target(str(sample)), ruleset_digest=missing)

    assert (done.verdict.ruleset_digest, done.verdict.kind) == (
        pinned.digest,
        verdict_pb2.VERDICT_KIND_MALICIOUS,
    )
    assert [f.rule for f in findings(client, done.scan_id)] == ["Marker_pinned"]
    assert unpinned.verdict.kind == verdict_pb2.VERDICT_KIND_CLEAN, "the active ruleset is unchanged"
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND, "an unknown pin is refused up front"
    assert "0000000000" in unknown.value.details()
