"""scanner.v1.VCenterService: inventory, on-demand VM scans, jobs, the action outbox, release."""

from __future__ import annotations

import asyncio

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from scanner.api import pages
from scanner.api.auth import current_identity
from scanner.app import App
from scanner.errors import FailedPrecondition, InvalidArgument
from scanner.v1 import vcenter_pb2 as pb
from scanner.v1 import vcenter_pb2_grpc, verdict_pb2
from scanner.vcenter.inventory import VmInfo
from scanner.vcenter.service import VCenterService as Core
from scanner.vcenter.store import Action, Job

POWER = {"poweredOn": pb.POWER_STATE_ON, "poweredOff": pb.POWER_STATE_OFF, "suspended": pb.POWER_STATE_SUSPENDED}
ACTION_STATES = {
    "PENDING": pb.ACTION_STATE_PENDING,
    "DONE": pb.ACTION_STATE_DONE,
    "DRY_RUN": pb.ACTION_STATE_DRY_RUN,
    "ABANDONED": pb.ACTION_STATE_ABANDONED,
    "REVERTED": pb.ACTION_STATE_REVERTED,
    "FAILED": pb.ACTION_STATE_FAILED,
}


class VCenterService(vcenter_pb2_grpc.VCenterServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    def _core(self) -> Core:
        if self.app.vcenter is None:
            raise FailedPrecondition("vCenter is not configured: add a [vcenter] table to the config")
        return self.app.vcenter

    async def ListVMs(self, request: pb.ListVMsRequest, context: aio.ServicerContext) -> pb.ListVMsResponse:
        size = pages.page_size(request.page_size, 100, 1000)
        start = pages.decode(request.page_token, "vms") or 0
        vms = sorted(await self._core().list_vms(), key=lambda v: (v.name, v.instance_uuid))
        token = pages.encode("vms", start + size) if len(vms) > start + size else ""
        return pb.ListVMsResponse(vms=[vm_message(v) for v in vms[start : start + size]], next_page_token=token)

    async def ScanVM(self, request: pb.ScanVMRequest, context: aio.ServicerContext) -> pb.ScanVMResponse:
        _require_uuid(request.vm_uuid)
        job, coalesced = await self._core().scan_vm(request.vm_uuid, current_identity.get().name)
        return pb.ScanVMResponse(job=job_message(job), coalesced=coalesced)

    async def ListJobs(self, request: pb.ListJobsRequest, context: aio.ServicerContext) -> pb.ListJobsResponse:
        size = pages.page_size(request.page_size, 50, 500)
        before = pages.decode(request.page_token, "jobs")
        rows = await asyncio.to_thread(self._core().store.job_page, size + 1, before)
        token = pages.encode("jobs", rows[size - 1][0]) if len(rows) > size else ""
        return pb.ListJobsResponse(jobs=[job_message(j) for _, j in rows[:size]], next_page_token=token)

    async def ListActions(self, request: pb.ListActionsRequest, context: aio.ServicerContext) -> pb.ListActionsResponse:
        size = pages.page_size(request.page_size, 100, 1000)
        before = pages.decode(request.page_token, "actions", request.vm_uuid)
        actions = await asyncio.to_thread(self._core().store.actions, request.vm_uuid, size + 1, before)
        token = pages.encode("actions", actions[size - 1].seq, request.vm_uuid) if len(actions) > size else ""
        return pb.ListActionsResponse(actions=[action_message(a) for a in actions[:size]], next_page_token=token)

    async def Release(self, request: pb.ReleaseRequest, context: aio.ServicerContext) -> pb.ReleaseResponse:
        _require_uuid(request.vm_uuid)
        if len(request.reason) > 500:
            raise InvalidArgument("reason", "at most 500 characters")
        rows = await self._core().release(
            request.vm_uuid, current_identity.get().name, resume=request.resume, reason=request.reason
        )
        return pb.ReleaseResponse(actions=[action_message(a) for a in rows])


def _require_uuid(value: str) -> None:
    if not value or len(value) > 64:
        raise InvalidArgument("vm_uuid", "the VM's instance UUID is required")


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def vm_message(v: VmInfo) -> pb.VM:
    return pb.VM(
        moref=v.moref,
        name=v.name,
        instance_uuid=v.instance_uuid,
        host=v.host,
        power_state=POWER.get(v.power_state, pb.POWER_STATE_UNSPECIFIED),
        guest_os=v.guest_os,
        vmx=v.vmx,
        files=[pb.DatastoreFile(name=f.name, type=f.type, size=f.size) for f in v.files],
        attributes=v.attributes,
    )


def job_message(j: Job) -> pb.Job:
    return pb.Job(
        job_id=j.id,
        reason=j.reason,
        vm_uuid=j.vm_uuid,
        vm_name=j.vm_name,
        state=j.state,
        verdict=j.verdict,
        job_state=getattr(pb, f"JOB_STATE_{j.state}", pb.JOB_STATE_UNSPECIFIED),
        verdict_kind=getattr(verdict_pb2, f"VERDICT_KIND_{j.verdict}", verdict_pb2.VERDICT_KIND_UNSPECIFIED),
        trigger=getattr(pb, f"TRIGGER_REASON_{j.reason.upper()}", pb.TRIGGER_REASON_UNSPECIFIED),
        severity=j.severity,
        scan_ids=list(j.scan_ids),
        notes=list(j.notes),
        created_at=_ts(j.created_at),
    )


def action_message(a: Action) -> pb.Action:
    return pb.Action(
        seq=a.seq,
        job_id=a.job_id,
        vm_uuid=a.vm_uuid,
        vm_name=a.vm_name,
        kind=a.kind,
        action_kind=getattr(pb, f"ACTION_KIND_{a.kind.split(':', 1)[0].upper()}", pb.ACTION_KIND_UNSPECIFIED),
        state=ACTION_STATES.get(a.state, pb.ACTION_STATE_UNSPECIFIED),
        attempts=a.attempts,
        last_error=a.last_error,
        result=a.result,
        created_at=_ts(a.created_at),
    )
