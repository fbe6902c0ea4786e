"""VCenterService over a real gRPC channel to the service process, and ``avscan vcenter`` on top."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from scanner.cli.main import cli
from scanner.lab.vcsim import PASSWORD, USER, Vcsim
from scanner.v1 import vcenter_pb2 as pb
from scanner.v1 import vcenter_pb2_grpc
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
    finally:
        assert service.terminate() == 0, service.output()[-2000:]
