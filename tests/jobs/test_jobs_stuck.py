"""A scan stuck in a read never wedges the service: cancel, watchdog, health, restarts, shutdown.

The stuck read is real: a unit whose read opens a FIFO in blocking mode, so its thread sleeps in
the kernel exactly as a read from a hung NFS server or a dead iSCSI LUN does (the appliance's
own opens can no longer block: ``scanner.acquisition.hostfile``). The target kind is registered
through the public target registry, the scan is submitted to the real scan manager, and
everything else is observed through the real gRPC API of the in-process service. Each test runs
on both state backends (SQLite; PostgreSQL, the fleet's queue, as a fleet of one appliance).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.inproc import ServerThread
from support.samples import sample_dir

from scanner import targets
from scanner.api.client import Client, files_target
from scanner.config import Config
from scanner.engine.cache import CacheSettings
from scanner.engine.settings import EngineSettings
from scanner.errors import Unavailable
from scanner.fleet.settings import FleetSettings
from scanner.jobs.settings import JobLimits
from scanner.state.backends import open_state
from scanner.state.settings import StateSettings
from scanner.targets.base import Skipped, Target, TargetSpec, Unit
from scanner.v1 import scans_pb2, verdict_pb2

READING: dict[str, threading.Event] = {}  # FIFO path -> a scan thread is in its blocking read
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class BlockedUnit(Unit):
    """4 KiB whose read waits for a writer on a FIFO: a read stuck in the kernel."""

    kind = "file"

    def __init__(self, fifo: str) -> None:
        self.name, self.size, self.fifo = fifo, 4096, fifo

    def window(self, offset: int, length: int) -> AbstractContextManager[memoryview]:
        return self._read(length)

    @contextmanager
    def _read(self, length: int) -> Iterator[memoryview]:
        READING.setdefault(self.fifo, threading.Event()).set()  # past the engine's cancel checks
        fd = os.open(self.fifo, os.O_RDONLY)  # blocks until the test opens the other end
        try:
            yield memoryview(os.read(fd, length).ljust(length, b"\0"))
        finally:
            os.close(fd)


class BlockedTarget(Target):
    kind = "blocked"

    def __init__(self, fifo: str) -> None:
        self.fifo = fifo

    def plan(self) -> Iterator[Unit | Skipped]:
        yield BlockedUnit(self.fifo)


@pytest.fixture
def fifo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "hung.fifo"
    os.mkfifo(path)
    monkeypatch.setitem(targets.REGISTRY, "blocked", lambda spec, env: BlockedTarget(str(spec.params["path"])))
    yield path
    release(path)


def release(fifo: Path) -> None:
    """Unblock every reader stuck on ``fifo`` (they read EOF): stuck threads end."""
    for _ in range(50):
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return  # no reader left
        os.close(fd)
        time.sleep(0.02)


FLEET = FleetSettings(poll_seconds=0.2)  # on PostgreSQL: a client following a scan sees it end promptly


def config(state: Path, url: str, **limits: float) -> Config:
    return Config(
        listen="127.0.0.1:0",
        state_dir=state,
        state=StateSettings(url),
        fleet=FLEET,
        engine=EngineSettings(threads=1),
        cache=CacheSettings(enabled=False),
        max_concurrent_scans=1,
        shutdown_grace=0.2,
        jobs=replace(JobLimits(cancel_grace=0.5), **limits),
    )


@pytest.fixture
def servers() -> Iterator[list[ServerThread]]:
    started: list[ServerThread] = []
    yield started
    for server in started:
        with contextlib.suppress(Exception):
            server.stop()


def serve(servers: list[ServerThread], cfg: Config) -> ServerThread:
    server = ServerThread(cfg)
    servers.append(server)
    return server


def submit_blocked(server: ServerThread, fifo: Path) -> str:
    spec = TargetSpec("blocked", {"path": str(fifo)})
    return server.call(server.app.scans.submit(spec, {}, "test")).id


def wait_state(client: Client, scan_id: str, state: int) -> scans_pb2.Scan:
    deadline = time.monotonic() + 60
    while (scan := client.get_scan(scan_id)).state != state:
        assert time.monotonic() < deadline, f"scan {scan_id} stayed {scan.state}, never {state}"
        time.sleep(0.05)
    return scan


def wait_health(address: str, status: int) -> None:
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status != status:
            assert time.monotonic() < deadline, f"health never became {status}"
            time.sleep(0.05)


def test_cancel_ends_a_scan_stuck_in_a_read_and_the_queue_moves_on(
    tmp_path: Path, fifo: Path, servers: list[ServerThread], state_url: str
) -> None:
    server = serve(servers, config(tmp_path / "state", state_url))
    with Client(server.address, timeout=30) as client:
        stuck = submit_blocked(server, fifo)
        wait_state(client, stuck, scans_pb2.SCAN_STATE_RUNNING)
        # RUNNING is stored when the scan is claimed (PostgreSQL) or just before its thread
        # starts: cancelled before its read, it would end cleanly, not stuck
        assert READING.setdefault(str(fifo), threading.Event()).wait(60), "the scan never reached its read"
        queued = client.start_scan(files_target(str(sample_dir(tmp_path / "samples"))))

        client.cancel(stuck)
        cancelled = client.wait(stuck, timeout=60)
        wait_health(server.address, NOT_SERVING)
        assert client.list_scans().scans, "listing works while a reader is stuck"
        done = client.wait(queued.scan_id, timeout=60)  # the only worker was given back

    assert cancelled.state == scans_pb2.SCAN_STATE_CANCELLED
    assert cancelled.verdict.kind == verdict_pb2.VERDICT_KIND_ERROR
    assert "did not stop in time" in cancelled.verdict.error
    assert done.verdict.kind == verdict_pb2.VERDICT_KIND_MALICIOUS
    release(fifo)
    wait_health(server.address, SERVING)


def test_a_scan_without_progress_is_stopped_by_the_watchdog(
    tmp_path: Path, fifo: Path, servers: list[ServerThread], state_url: str
) -> None:
    server = serve(servers, config(tmp_path / "state", state_url, stall_timeout=1.0))
    with Client(server.address, timeout=30) as client:
        stalled = client.wait(submit_blocked(server, fifo), timeout=60)
    assert stalled.state == scans_pb2.SCAN_STATE_DONE
    assert stalled.verdict.kind == verdict_pb2.VERDICT_KIND_ERROR
    assert "stalled: no progress for 1 s" in stalled.verdict.error


def test_a_job_that_hung_twice_is_not_run_a_third_time(
    tmp_path: Path, fifo: Path, servers: list[ServerThread], state_url: str
) -> None:
    state = tmp_path / "state"
    first = serve(servers, config(state, state_url))
    scan_id = submit_blocked(first, fifo)
    for attempt in (1, 2):
        server = first if attempt == 1 else serve(servers, config(state, state_url))
        with Client(server.address, timeout=30) as client:
            wait_state(client, scan_id, scans_pb2.SCAN_STATE_RUNNING)
        server.stop(grace=0.2)  # returns although the scan's thread never does
        assert read_state(state, state_url, scan_id) == ("INTERRUPTED", attempt)

    third = serve(servers, config(state, state_url))
    with Client(third.address, timeout=30) as client:
        final = client.wait(scan_id, timeout=60)
    assert (final.state, final.attempts) == (scans_pb2.SCAN_STATE_DONE, 2)
    assert final.verdict.kind == verdict_pb2.VERDICT_KIND_ERROR
    assert "started 2 times and never finished" in final.verdict.error


def read_state(state: Path, url: str, scan_id: str) -> tuple[str, int]:
    """The scan's state and attempts as stored, through the state the service used."""
    db = open_state(StateSettings(url), state, FLEET)
    try:
        record = db.get_scan(scan_id)
    finally:
        db.close()
    return record.state, record.attempts


def test_start_scan_does_not_wait_for_a_target_that_never_opens(
    tmp_path: Path, fifo: Path, servers: list[ServerThread], monkeypatch: pytest.MonkeyPatch, state_url: str
) -> None:
    class BlockedOpen(BlockedTarget):
        def __init__(self, path: str) -> None:
            os.close(os.open(path, os.O_RDONLY))  # blocks: the open itself hangs

    monkeypatch.setitem(targets.REGISTRY, "blocked", lambda spec, env: BlockedOpen(str(spec.params["path"])))
    server = serve(servers, config(tmp_path / "state", state_url, open_timeout=0.5))
    with pytest.raises(Unavailable, match=r"opening the target did not finish within 0\.5 s"):
        submit_blocked(server, fifo)
    with Client(server.address, timeout=30) as client:
        assert client.list_scans().scans == []
