"""What the outbox does in vCenter: mark, quarantine ladder steps, and their reversal.

Contract: every action is idempotent — it reads the current state first and changes only what
is not yet as wanted, then reads back to confirm (a retry after a lost answer is harmless).
Steps that are undone on release record the state before the first try (``prior``, written
once by the store) so release restores exactly that.
Each function is blocking and takes ``(ctx, si, action)``; it returns a one-line result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scanner.vcenter.acquisition import take_snapshot
from scanner.vcenter.connection import Connection, TaskFailed, pyvmomi
from scanner.vcenter.inventory import find_vm
from scanner.vcenter.settings import QuarantinePolicy
from scanner.vcenter.store import Action, VCenterStore
from scanner.vcenter.tags import Tagging, TaggingUnavailable

ATTRIBUTES = ("avscan.request", "avscan.verdict", "avscan.lastScan", "avscan.ruleset", "avscan.release")
"""The custom attributes avscan reads (request) and writes; defined at start (``ensure_fields``)."""


@dataclass
class ActionContext:
    conn: Connection
    store: VCenterStore
    policy: QuarantinePolicy
    tagging: Tagging


def ensure_fields(si: Any) -> list[str]:
    """Define the ``ATTRIBUTES`` custom fields on VirtualMachine where missing (so an operator
    can set ``avscan.request`` without creating it first); returns those created."""
    vim, _ = pyvmomi()
    manager = si.content.customFieldsManager
    have = {f.name for f in manager.field or []}
    created = []
    for name in ATTRIBUTES:
        if name in have:
            continue
        try:
            manager.AddCustomFieldDef(name=name, moType=vim.VirtualMachine)
            created.append(name)
        except vim.fault.DuplicateName:
            pass  # another appliance made it meanwhile
    return created


def set_attributes(ctx: ActionContext, si: Any, action: Action) -> str:
    vim, _ = pyvmomi()
    vm = find_vm(si, action.vm_uuid)
    manager = si.content.customFieldsManager
    keys = {f.name: f.key for f in manager.field or []}
    values: dict[str, str] = action.params["values"]
    for name in values:
        if name not in keys:
            try:
                keys[name] = manager.AddCustomFieldDef(name=name, moType=vim.VirtualMachine).key
            except vim.fault.DuplicateName:
                keys = {f.name: f.key for f in manager.field or []}
    current = {v.key: v.value for v in vm.customValue or []}
    changed = [n for n, v in values.items() if current.get(keys[n], "") != v]
    for name in changed:
        manager.SetField(entity=vm, key=keys[name], value=values[name])
    after = {v.key: v.value for v in vm.customValue or []}
    wrong = [n for n, v in values.items() if after.get(keys[n], "") != v]
    if wrong:
        raise TaskFailed("set attributes", f"vCenter did not keep {wrong}")
    return f"set {', '.join(changed) or 'nothing (already set)'}"


def tag(ctx: ActionContext, si: Any, action: Action) -> str:
    vm = find_vm(si, action.vm_uuid)
    try:
        tag_id = ctx.tagging.ensure_tag(ctx.policy.tag_category, ctx.policy.tag_name)
        attached = ctx.tagging.attached(vm._moId)
    except TaggingUnavailable as e:
        return f"skipped: {e.message}; the avscan.verdict attribute marks the VM"
    ctx.store.set_prior(action.seq, {"tag_id": tag_id, "was_attached": tag_id in attached})
    if tag_id not in attached:
        ctx.tagging.attach(tag_id, vm._moId)
    if tag_id not in ctx.tagging.attached(vm._moId):
        raise TaskFailed("tag", "tag not attached after attach")
    return f"tag {ctx.policy.tag_category}/{ctx.policy.tag_name} attached"


def untag(ctx: ActionContext, si: Any, action: Action) -> str:
    prior = action.params.get("prior") or {}
    if not prior.get("tag_id"):
        return "nothing to do: no tag was attached"
    if prior.get("was_attached"):
        return "tag kept: it was attached before the quarantine"
    vm = find_vm(si, action.vm_uuid)
    if prior["tag_id"] in ctx.tagging.attached(vm._moId):
        ctx.tagging.detach(prior["tag_id"], vm._moId)
    return "tag detached"


def post_event(ctx: ActionContext, si: Any, action: Action) -> str:
    """An entry in the VM's event log: LogUserEvent, else PostEvent(GeneralUserEvent) where it is missing."""
    vim, vmodl = pyvmomi()
    vm = find_vm(si, action.vm_uuid)
    marker = f"[avscan {action.job_id}/{action.kind}]"
    message = f"{action.params['message']} {marker}"
    manager = si.content.eventManager
    spec = vim.event.EventFilterSpec(entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"))
    if any(
        marker in (getattr(e, "message", "") or getattr(e, "fullFormattedMessage", "") or "")
        for e in manager.QueryEvents(spec)
    ):
        return "event already in the VM's log"
    try:
        manager.LogUserEvent(entity=vm, msg=message)
        return "LogUserEvent posted"
    except vmodl.fault.MethodNotFound:
        event = vim.event.GeneralUserEvent(
            key=0,
            chainId=0,
            createdTime=si.CurrentTime(),
            userName="",
            message=message,
            vm=vim.event.VmEventArgument(vm=vm, name=vm.name),
        )
        manager.PostEvent(eventToPost=event)
        return "LogUserEvent missing (vcsim); posted a GeneralUserEvent instead"


def _nics(vm: Any) -> list[Any]:
    vim, _ = pyvmomi()
    return [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]


NicState = tuple[bool, bool, bool]  # connected, startConnected, allowGuestControl


def _nic_state(nic: Any) -> NicState:
    c = nic.connectable
    return bool(c.connected), bool(c.startConnected), bool(c.allowGuestControl)


def _set_nics(ctx: ActionContext, si: Any, vm: Any, wanted: dict[int, NicState], what: str) -> int:
    vim, _ = pyvmomi()
    changes = []
    for nic in _nics(vm):
        if nic.key not in wanted or nic.connectable is None:
            continue
        if _nic_state(nic) == wanted[nic.key]:
            continue
        c = nic.connectable
        c.connected, c.startConnected, c.allowGuestControl = wanted[nic.key]
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic))
    if changes:
        task = vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=changes))
        ctx.conn.wait_task(si, task, f"{what} on {vm.name}")
    after = {n.key: _nic_state(n) for n in _nics(vm) if n.connectable}
    wrong = [k for k, v in wanted.items() if k in after and after[k] != v]
    if wrong:
        raise TaskFailed(what, f"NICs {wrong} not in the wanted state after reconfigure")
    return len(changes)


def disconnect(ctx: ActionContext, si: Any, action: Action) -> str:
    """Disconnect every vNIC, not at power-on either, and take the guest's control of them away
    (``allowGuestControl``: VMware Tools in the guest could otherwise reconnect them)."""
    vm = find_vm(si, action.vm_uuid)
    state = [
        {
            "key": n.key,
            "label": n.deviceInfo.label,
            "connected": bool(n.connectable.connected),
            "start_connected": bool(n.connectable.startConnected),
            "allow_guest_control": bool(n.connectable.allowGuestControl),
        }
        for n in _nics(vm)
        if n.connectable is not None
    ]
    prior = ctx.store.set_prior(action.seq, state)  # the first try's view wins
    changed = _set_nics(ctx, si, vm, {n["key"]: (False, False, False) for n in prior}, "disconnect NICs")
    return f"{len(prior)} NIC(s) disconnected, guest control off ({changed} changed now)"


def restore_network(ctx: ActionContext, si: Any, action: Action) -> str:
    prior = action.params.get("prior") or []
    vm = find_vm(si, action.vm_uuid)
    wanted = {n["key"]: (n["connected"], n["start_connected"], n.get("allow_guest_control", True)) for n in prior}
    changed = _set_nics(ctx, si, vm, wanted, "restore NICs")
    return f"{len(prior)} NIC(s) restored to their prior state ({changed} changed now)"


FORENSIC_PREFIX = "avscan-forensic"


def forensic_name(job_id: str) -> str:
    """Forensic snapshots are named apart from acquisition ones (``avscan-<job>``)."""
    return f"{FORENSIC_PREFIX}-{job_id}"


def forensic_snapshot(ctx: ActionContext, si: Any, action: Action) -> str:
    keep = ctx.policy.forensic_retention_days
    until = "until removed by an administrator" if not keep else f"for {keep:g} days, then removed by avscan"
    description = (
        f"avscan FORENSIC snapshot: kept for investigation of a {action.params.get('severity', 0)}-severity "
        f"detection (job {action.job_id}); kept {until}. Not an acquisition snapshot."
    )
    moref = take_snapshot(ctx.conn, si, action.vm_uuid, forensic_name(action.job_id), description)
    return f"forensic snapshot {moref} kept {until}"


def suspend(ctx: ActionContext, si: Any, action: Action) -> str:
    vm = find_vm(si, action.vm_uuid)
    power = str(vm.runtime.powerState)
    ctx.store.set_prior(action.seq, {"power_state": power})
    if power != "poweredOn":
        return f"not suspended: VM is {power}"
    ctx.conn.wait_task(si, vm.SuspendVM_Task(), f"suspend {vm.name}")
    deadline = time.monotonic() + 10
    while str(vm.runtime.powerState) != "suspended" and time.monotonic() < deadline:
        time.sleep(0.1)
    return "VM suspended"


def resume(ctx: ActionContext, si: Any, action: Action) -> str:
    prior = action.params.get("prior") or {}
    vm = find_vm(si, action.vm_uuid)
    if prior.get("power_state") != "poweredOn" or str(vm.runtime.powerState) == "poweredOn":
        return "power state left as is"
    ctx.conn.wait_task(si, vm.PowerOnVM_Task(), f"resume {vm.name}")
    return "VM powered on again"


APPLY: dict[str, Callable[[ActionContext, Any, Action], str]] = {
    "request_ack": set_attributes,
    "attributes": set_attributes,
    "event": post_event,
    "tag": tag,
    "disconnect": disconnect,
    "snapshot": forensic_snapshot,
    "suspend": suspend,
    "release_attributes": set_attributes,
    "untag": untag,
    "restore_network": restore_network,
    "resume": resume,
    "release_event": post_event,
}
REVERSIBLE = {"tag": "untag", "disconnect": "restore_network", "suspend": "resume"}
"""Quarantine steps and the release action that undoes each (forensic snapshots are kept)."""
