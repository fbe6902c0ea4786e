"""OS awareness as users reach it: the CLI's default scan names processes; gRPC process mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scanner.api.client import Client
from scanner.v1 import scans_pb2
from tests.outputs.ecs_reference import problems
from tests.support.service import Service

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dumped(lab_guest, tmp_path_factory):
    path = tmp_path_factory.mktemp("dump") / "guest.elf"
    lab_guest.pause()
    try:
        lab_guest.dump_elf(path)
    finally:
        lab_guest.resume()
    return lab_guest, path


def test_cli_default_scan_of_a_linux_dump_names_the_marker_processes(dumped, tmp_path):
    guest, dump = dumped
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "--state-dir", str(tmp_path / "s"), "scan", "--json", "--memory", str(dump)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    for each in docs:
        assert problems(each) == [], each  # valid ECS 8.11, the scan's end document too
    [doc] = [d for d in docs if d["event"]["kind"] == "alert"]
    assert docs[-1]["event"]["action"] == "scan-finished"
    owners = doc["avscan"]["finding"]["owners"]
    assert sorted(int(p) for p in owners["pid"].split(",")) == sorted(guest.marker_pids)
    assert str(guest.clean_pid) not in owners["pid"].split(",")
    assert doc["process"]["pid"] in guest.marker_pids
    assert "avscan-marker" in owners["process"]
    assert doc["process"]["name"].startswith("avscan-marker")
    assert doc["threat"]["indicator"]["type"] == "process"


def test_grpc_process_mode_gives_one_finding_per_marker_process_region(dumped, tmp_path):
    guest, dump = dumped
    service = Service(tmp_path / "state")
    try:
        with Client(service.address, timeout=120) as client:
            target = scans_pb2.Target(
                memory=scans_pb2.MemoryTarget(path=str(dump), os=scans_pb2.OS_AWARENESS_PROCESSES)
            )
            done = client.wait(client.start_scan(target).scan_id, timeout=300)
            findings = [f for page in client.findings(done.scan_id) for f in page.findings]
    finally:
        service.close()
    assert done.verdict.details["mode"] == "processes"
    assert done.verdict.details["os"] == "linux"
    eicar = [f for f in findings if f.rule == "EICAR_Test_File"]
    assert sorted(int(f.context["pid"]) for f in eicar) == sorted(guest.marker_pids)
    for f in eicar:
        head = [s for s in f.strings if s.identifier == "$head"]
        assert head and head[0].HasField("physical_address")
        assert f.context["process"].startswith("avscan-marker")
        assert f.unit_kind == "process-memory"
