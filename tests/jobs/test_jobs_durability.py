"""Scans and activations survive SIGKILL and SIGTERM of the real service process, on both state
backends (SQLite under the state directory; PostgreSQL, a fleet of one appliance)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.samples import (
    default_files,
    marker,
    marker_rule,
    sample_dir,
    sparse_image,
)
from support.service import Service

from scanner.api.client import Client, files_target, memory_target
from scanner.fleet.settings import FleetSettings
from scanner.state.backends import open_state
from scanner.state.settings import StateSettings
from scanner.v1 import scans_pb2, verdict_pb2
from tests.support.postgres import state_section

GiB = 1024**3
CONFIG = """
[jobs]
max_concurrent_scans = 1
shutdown_grace = 0.3
[engine]
threads = 1
chunk_size = 65536
overlap = 4096
skip_zero_blocks = false  # sparse images stay slow to scan
[cache]
enabled = false  # with it, every all-zero window after the first is a cache hit
"""


@pytest.fixture
def config(tmp_path: Path, state_url: str) -> Path:
    path = tmp_path / "avscan.toml"
    path.write_text(CONFIG + state_section(state_url))
    return path


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.close()


def start(services: list[Service], state: Path, config: Path) -> Service:
    service = Service(state, config)
    services.append(service)
    return service


def wait_running(client: Client, scan_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.get_scan(scan_id).state != scans_pb2.SCAN_STATE_RUNNING:
        assert time.monotonic() < deadline, f"scan {scan_id} never started"
        time.sleep(0.02)


def read_scan(state: Path, url: str, scan_id: str):
    """The scan as stored, read through the state the service used (its SQLite or PostgreSQL)."""
    db = open_state(StateSettings(url), state, FleetSettings())
    try:
        return db.get_scan(scan_id)
    finally:
        db.close()


@pytest.mark.slow
def test_acknowledged_scans_survive_sigkill(tmp_path: Path, config: Path, services: list[Service]) -> None:
    state = tmp_path / "state"
    samples = sample_dir(tmp_path / "samples")
    big = sparse_image(tmp_path / "big.raw", GiB, {GiB - 100: b"tail " + marker("none")})
    small = sparse_image(tmp_path / "small.raw", GiB // 4, {4096: b"head"})
    first = start(services, state, config)
    with first.client() as client:
        running = client.start_scan(memory_target(str(big)))
        wait_running(client, running.scan_id)
        queued = [
            client.start_scan(memory_target(str(small))),
            client.start_scan(files_target(str(samples))),
            client.start_scan(files_target(str(samples)), request_id="retry-me"),
        ]
        assert all(client.get_scan(s.scan_id).state == scans_pb2.SCAN_STATE_QUEUED for s in queued)

    first.kill()
    second = start(services, state, config)

    with second.client() as client:
        acknowledged = [running, *queued]
        finals = {s.scan_id: client.wait(s.scan_id, timeout=120) for s in acknowledged}
        assert client.start_scan(files_target(str(samples)), request_id="retry-me").scan_id == queued[2].scan_id
        listed = {s.scan_id for s in client.list_scans().scans}
    assert listed == {s.scan_id for s in acknowledged}
    for scan_id, final in finals.items():
        assert final.state == scans_pb2.SCAN_STATE_DONE, scan_id
        assert final.verdict.kind != verdict_pb2.VERDICT_KIND_UNSPECIFIED and final.attempts >= 1
    assert finals[running.scan_id].attempts == 2, "the scan that was running is re-run once"
    assert finals[running.scan_id].verdict.coverage.complete
    assert finals[running.scan_id].verdict.kind == verdict_pb2.VERDICT_KIND_CLEAN
    assert finals[queued[1].scan_id].verdict.kind == verdict_pb2.VERDICT_KIND_MALICIOUS


@pytest.mark.slow
def test_sigterm_interrupts_a_long_scan_and_the_next_start_reruns_it(
    tmp_path: Path, config: Path, state_url: str, services: list[Service]
) -> None:
    state = tmp_path / "state"
    image = sparse_image(tmp_path / "guest.raw", GiB, {GiB // 2: b"x"})
    first = start(services, state, config)
    with first.client() as client:
        scan = client.start_scan(memory_target(str(image)))
        wait_running(client, scan.scan_id)

    assert first.terminate() == 0
    record = read_scan(state, state_url, scan.scan_id)
    # shutdown_grace bounded the wait: the scan was cut off, not waited for to the end
    assert (record.state, record.verdict) == ("INTERRUPTED", None)

    second = start(services, state, config)
    with second.client() as client:
        done = client.wait(scan.scan_id, timeout=120)
    assert (done.state, done.attempts) == (scans_pb2.SCAN_STATE_DONE, 2)
    assert done.verdict.kind == verdict_pb2.VERDICT_KIND_CLEAN and done.verdict.coverage.complete


def alternate(client: Client, digests: list[str], stop: threading.Event, acknowledged: list[str]) -> None:
    i = 0
    while not stop.is_set():
        try:
            acknowledged.append(client.activate(digest=digests[i % 2]).digest)
        except grpc.RpcError:
            return  # the server died under us
        i += 1


@pytest.mark.slow
def test_sigkill_during_activations_leaves_exactly_one_whole_ruleset(
    tmp_path: Path, config: Path, services: list[Service]
) -> None:
    state = tmp_path / "state"
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"\0" * 64 + marker("one") + b"\0" * 64 + marker("two") + b"\0" * 64)
    service = start(services, state, config)
    with service.client() as client:
        v1 = client.push_ruleset([*default_files(), ("x/one.yar", marker_rule("one"))], "v1").ruleset
        v2 = client.push_ruleset([*default_files(), ("x/two.yar", marker_rule("two"))], "v2").ruleset
    expected = {v1.digest: {"Marker_one"}, v2.digest: {"Marker_two"}}
    rng = random.Random(20240611)

    for _ in range(5):
        stop, acknowledged = threading.Event(), []
        client = service.client()
        worker = threading.Thread(target=alternate, args=(client, [v1.digest, v2.digest], stop, acknowledged))
        worker.start()
        wanted, deadline = rng.randint(1, 6), time.monotonic() + 120
        while len(acknowledged) < wanted:  # killed after a random number of activations, mid-next
            assert time.monotonic() < deadline and worker.is_alive(), f"{len(acknowledged)} activations"
            time.sleep(0.001)
        service.kill()
        stop.set()
        worker.join(30)
        client.close()
        assert acknowledged, "no activation completed before the kill"

        service = start(services, state, config)
        with service.client() as client:
            active = [r for r in client.list_rulesets() if r.active]
            assert len(active) == 1 and active[0].digest in expected
            done = client.wait(client.start_scan(files_target(str(sample))).scan_id, timeout=60)
            rules = {f.rule for page in client.findings(done.scan_id) for f in page.findings}
        assert done.verdict.ruleset_digest == active[0].digest
        assert rules == expected[active[0].digest], "the scan used one whole ruleset, not a mix"
        assert "Traceback" not in service.output()
