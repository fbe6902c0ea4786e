"""VCenterService over a real gRPC channel to the service process, and ``avscan vcenter`` on top."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from scanner.cli.main import cli
from scanner.lab.vcsim import PASSWORD, USER, Vcsim
from scanner.v1 import vcenter_pb2 as pb
from scanner.v1 import vcenter_pb2_grpc
from tests.outputs.ecs_reference import problems
from tests.support.service import Service
from tests.vcenter.sim import SimClient

pytestmark = [pytest.mark.lab, pytest.mark.slow]
VM = "DC0_C0_RP0_VM0"


def test_inventory_scan_actions_release_through_api_and_cli(
    vcsim: Vcsim, sim: SimClient, lab_vmem: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    sim.set_nics(VM, connected=True, start=False)
    sim.place_memory(VM, lab_vmem)
    config = tmp_path / "avscan.toml"
    config.write_text(
        f'[vcenter]\nurl = "{vcsim.url}"\nuser = "{USER}"\ninsecure = true\npassword_env = "VC_PW"\n'
        "[vcenter.policy]\ntriggers = []\n"
        f'[[events.sinks]]\nkind = "jsonl"\npath = "{tmp_path / "events.jsonl"}"\n'
        '[server]\nmetrics_listen = "127.0.0.1:0"\n'
    )
    monkeypatch.setenv("VC_PW", PASSWORD)
    service = Service(tmp_path / "state", config)
    try:
        runner = CliRunner()
        server = ["--server", service.address]
        result = runner.invoke(cli, ["vcenter", "inventory", *server, "--files"])
        assert result.exit_code == 0, result.output
        assert VM in result.output and sim.uuid(VM) in result.output and ".vmx" in result.output
        with grpc.insecure_channel(service.address) as channel:
            stub = vcenter_pb2_grpc.VCenterServiceStub(channel)
            vms = {v.name: v for v in stub.ListVMs(pb.ListVMsRequest(), timeout=30).vms}
            assert vms[VM].power_state == pb.POWER_STATE_ON and vms[VM].host
            with pytest.raises(grpc.RpcError) as e:
                stub.ScanVM(pb.ScanVMRequest(), timeout=30)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        uuid = sim.uuid(VM)
        result = runner.invoke(cli, ["vcenter", "scan", *server, uuid])
        assert result.exit_code == 0 and "job " in result.output, result.output
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(not c for _, c, _ in sim.nics(VM)):
            time.sleep(0.3)
        assert all(not c and not s for _, c, s in sim.nics(VM))
        result = runner.invoke(cli, ["vcenter", "actions", *server, "--vm", uuid])
        assert "disconnect" in result.output and "DONE" in result.output, result.output
        result = runner.invoke(cli, ["vcenter", "release", *server, uuid, "--reason", "false positive"])
        assert result.exit_code == 0 and "restore_network" in result.output, result.output
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sim.nics(VM)[0][1:] != (True, False):
            time.sleep(0.3)
        assert [n[1:] for n in sim.nics(VM)] == [(True, False)]  # exactly as before, startConnected too
        _pages_enums_and_events(service.address, uuid, tmp_path / "events.jsonl")
        _outbox_metrics(service.output())
    finally:
        assert service.terminate() == 0, service.output()[-2000:]


def _pages_enums_and_events(address: str, uuid: str, events: Path) -> None:
    """Every list pages with opaque tokens, jobs and actions carry enums, and the quarantine
    actions left the appliance as ECS events naming the VM."""
    with grpc.insecure_channel(address) as channel:
        stub = vcenter_pb2_grpc.VCenterServiceStub(channel)
        everything = [v.instance_uuid for v in stub.ListVMs(pb.ListVMsRequest(page_size=1000), timeout=30).vms]
        paged, token = [], ""
        while True:
            page = stub.ListVMs(pb.ListVMsRequest(page_size=2, page_token=token), timeout=30)
            paged += [v.instance_uuid for v in page.vms]
            token = page.next_page_token
            if not token:
                break
        assert paged == everything and len(everything) > 2
        actions, token = [], ""
        while True:
            page = stub.ListActions(pb.ListActionsRequest(vm_uuid=uuid, page_size=2, page_token=token), timeout=30)
            actions += list(page.actions)
            token = page.next_page_token
            if not token:
                break
        assert len({a.seq for a in actions}) == len(actions) > 2
        assert pb.ACTION_KIND_DISCONNECT in {a.action_kind for a in actions}
        assert all(a.action_kind != pb.ACTION_KIND_UNSPECIFIED for a in actions)
        (job,) = stub.ListJobs(pb.ListJobsRequest(), timeout=30).jobs
        assert job.job_state == pb.JOB_STATE_DONE and job.trigger == pb.TRIGGER_REASON_API
        assert job.verdict_kind != 0
        with pytest.raises(grpc.RpcError) as e:
            stub.ListJobs(pb.ListJobsRequest(page_token="\u00b2"), timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    deadline = time.monotonic() + 60
    docs: list[dict] = []
    wanted = {"quarantine-disconnect", "release-restore_network"}
    while time.monotonic() < deadline and not wanted <= {d["event"]["action"] for d in docs}:
        time.sleep(0.2)
        docs = [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else []
    quarantine = [d for d in docs if d["event"]["action"] == "quarantine-disconnect"]
    assert quarantine, [d["event"]["action"] for d in docs]
    assert quarantine[0]["host"]["name"] == VM and quarantine[0]["cloud"]["instance"]["id"] == uuid
    scans = [d for d in docs if d["event"]["dataset"] in ("avscan.finding", "avscan.scan")]
    assert scans and all(d["host"]["name"] == VM for d in scans)
    for doc in docs:
        assert problems(doc) == [], doc


def _outbox_metrics(log: str) -> None:
    """The vCenter outbox shows in /metrics: nothing pending once every action is done."""
    port = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log)
    assert port, log[-2000:]
    with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["avscan_vcenter_outbox_depth"] == 0
    assert values["avscan_vcenter_actions_failed"] == 0
    assert values["avscan_event_backlog"] == 0
