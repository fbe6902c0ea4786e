"""Every scan ends in an event, whatever happened to it: cancelled while queued (never started),
cancelled while running, failed (ERROR), clean."""

from __future__ import annotations

import json
import time
from dataclasses import replace

from api.conftest import make_config
from support.inproc import ServerThread
from support.samples import eicar, sparse_image

from outputs.ecs_reference import problems
from scanner.api.client import Client, files_target, memory_target
from scanner.v1 import scans_pb2

GiB = 1 << 30


def wait_state(client: Client, scan_id: str, state: int) -> None:
    deadline = time.monotonic() + 60
    while client.get_scan(scan_id).state != state:
        assert time.monotonic() < deadline, f"scan {scan_id} never reached {state}"
        time.sleep(0.05)


def test_cancelled_queued_running_and_clean_scans_all_emit_their_end(tmp_path):
    events = tmp_path / "events.jsonl"
    config = replace(
        make_config(tmp_path / "state"),
        max_concurrent_scans=1,
        event_sinks=({"kind": "jsonl", "name": "file", "path": str(events)},),
    )
    server = ServerThread(config)
    try:
        with Client(server.address, timeout=60) as client:
            running = client.start_scan(memory_target(str(sparse_image(tmp_path / "big.raw", 2 * GiB)))).scan_id
            wait_state(client, running, scans_pb2.SCAN_STATE_RUNNING)
            queued = client.start_scan(files_target(str(tmp_path))).scan_id  # one worker: it waits
            client.cancel(queued)
            client.cancel(running)
            client.wait(running, timeout=60)
            clean_file = tmp_path / "clean.txt"
            clean_file.write_text("nothing\n")
            clean = client.wait(client.start_scan(files_target(str(clean_file))).scan_id, timeout=60).scan_id
        deadline = time.monotonic() + 60
        while len(events.read_text().splitlines() if events.exists() else []) < 3:
            assert time.monotonic() < deadline, "end events not delivered"
            time.sleep(0.05)
    finally:
        server.stop()
    ends = {d["avscan"]["scan"]["id"]: d for d in map(json.loads, events.read_text().splitlines())}
    assert set(ends) == {running, queued, clean}
    for doc in ends.values():
        assert problems(doc) == [], doc
        assert doc["event"]["action"] == "scan-finished"
    assert ends[queued]["avscan"]["scan"]["state"] == "CANCELLED"
    assert ends[queued]["avscan"]["scan"]["verdict"] == "INCOMPLETE"
    assert ends[queued]["avscan"]["scan"]["coverage"]["gaps"][0]["kind"] == "CANCELLED"
    assert ends[running]["avscan"]["scan"]["state"] == "CANCELLED"
    assert ends[clean]["avscan"]["scan"]["verdict"] == "CLEAN"


def test_start_scan_subject_names_the_vm_in_its_events(tmp_path):
    events = tmp_path / "events.jsonl"
    config = replace(
        make_config(tmp_path / "state"), event_sinks=({"kind": "jsonl", "name": "file", "path": str(events)},)
    )
    image = tmp_path / "web-01.raw"
    with image.open("wb") as f:
        f.truncate(2 << 20)
        f.seek(1 << 20)
        f.write(eicar())
    server = ServerThread(config)
    try:
        with Client(server.address, timeout=60) as client:
            scan = client.start_scan(memory_target(str(image)), subject=("web-01", "4211-aa"))
            assert scan.options.subject.name == "web-01"
            client.wait(scan.scan_id, timeout=60)
        deadline = time.monotonic() + 60
        while len(events.read_text().splitlines() if events.exists() else []) < 2:
            assert time.monotonic() < deadline, "events not delivered"
            time.sleep(0.05)
    finally:
        server.stop()
    docs = [json.loads(line) for line in events.read_text().splitlines()]
    assert {(d["host"]["name"], d["host"]["id"]) for d in docs} == {("web-01", "4211-aa")}
    assert all(problems(d) == [] for d in docs)
