"""``avscan vcenter ...``: the vCenter side of a running service (inventory, scans, actions, release)."""

from __future__ import annotations

from pathlib import Path

import click

from scanner.api.client import Client
from scanner.cli.remote import client_options, connect, rpc_errors
from scanner.v1 import vcenter_pb2 as pb
from scanner.v1 import vcenter_pb2_grpc

POWER = {pb.POWER_STATE_ON: "on", pb.POWER_STATE_OFF: "off", pb.POWER_STATE_SUSPENDED: "suspended"}


def _stub(client: Client) -> vcenter_pb2_grpc.VCenterServiceStub:
    return vcenter_pb2_grpc.VCenterServiceStub(client.channel)


def _call(server: str, token: str, ca: Path | None, cert: Path | None, key: Path | None, method: str, request):  # type: ignore[no-untyped-def]
    with connect(server, token, ca, cert, key) as client:
        return getattr(_stub(client), method)(request, timeout=client.timeout, metadata=client.metadata)


def action_line(a: pb.Action) -> str:
    state = pb.ActionState.Name(a.state).removeprefix("ACTION_STATE_")
    tail = a.result or a.last_error
    return f"{a.seq:>5} {state:<9} {a.kind:<16} {a.vm_name:<20} tries={a.attempts} {tail}"


@click.group()
def vcenter() -> None:
    """vCenter: inventory, triggered scans, quarantine actions and release."""


@vcenter.command()
@client_options
@click.option("--files", "show_files", is_flag=True, help="Also list each VM's datastore files.")
@rpc_errors
def inventory(server: str, token: str, ca: Path | None, cert: Path | None, key: Path | None, show_files: bool) -> None:
    """List the VMs vCenter knows (host, power, guest OS, instance UUID)."""
    response = _call(server, token, ca, cert, key, "ListVMs", pb.ListVMsRequest())
    for vm in response.vms:
        verdict = vm.attributes.get("avscan.verdict", "")
        click.echo(
            f"{vm.name:<20} {vm.instance_uuid} {vm.host:<10} {POWER.get(vm.power_state, '?'):<9} "
            f"{vm.guest_os} {verdict}"
        )
        if show_files:
            for f in vm.files:
                click.echo(f"    {f.type:<15} {f.size:>12} {f.name}")


@vcenter.command()
@client_options
@click.argument("vm_uuid")
@rpc_errors
def scan(server: str, token: str, ca: Path | None, cert: Path | None, key: Path | None, vm_uuid: str) -> None:
    """Scan a VM now (snapshot with memory, download, scan, verdict back to vCenter)."""
    response = _call(server, token, ca, cert, key, "ScanVM", pb.ScanVMRequest(vm_uuid=vm_uuid))
    joined = " (joined the job in flight)" if response.coalesced else ""
    click.echo(f"job {response.job.job_id} {response.job.state}{joined}")


@vcenter.command()
@client_options
@click.option("--limit", default=20, show_default=True)
@rpc_errors
def jobs(server: str, token: str, ca: Path | None, cert: Path | None, key: Path | None, limit: int) -> None:
    """vCenter-triggered scan jobs, newest first."""
    response = _call(server, token, ca, cert, key, "ListJobs", pb.ListJobsRequest(page_size=limit))
    for j in response.jobs:
        click.echo(f"{j.job_id} {j.reason:<9} {j.vm_name:<20} {j.state:<10} {j.verdict} {'; '.join(j.notes)}")


@vcenter.command()
@client_options
@click.option("--vm", "vm_uuid", default="", help="Only this VM (instance UUID).")
@click.option("--limit", default=50, show_default=True)
@rpc_errors
def actions(
    server: str, token: str, ca: Path | None, cert: Path | None, key: Path | None, vm_uuid: str, limit: int
) -> None:
    """The action outbox: verdict marks, quarantine steps, releases (newest first)."""
    response = _call(
        server, token, ca, cert, key, "ListActions", pb.ListActionsRequest(vm_uuid=vm_uuid, page_size=limit)
    )
    for a in response.actions:
        click.echo(action_line(a))


@vcenter.command()
@client_options
@click.argument("vm_uuid")
@click.option("--resume", is_flag=True, help="Power the VM on again if the quarantine suspended it.")
@click.option("--reason", default="", help="Why (audit log and the VM's event).")
@rpc_errors
def release(
    server: str,
    token: str,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    vm_uuid: str,
    resume: bool,
    reason: str,
) -> None:
    """Release a quarantined VM: NICs back to their exact prior state, tag removed."""
    response = _call(
        server, token, ca, cert, key, "Release", pb.ReleaseRequest(vm_uuid=vm_uuid, resume=resume, reason=reason)
    )
    if not response.actions:
        click.echo("nothing to release: no quarantine action applied or pending for this VM")
    for a in response.actions:
        click.echo(action_line(a))
