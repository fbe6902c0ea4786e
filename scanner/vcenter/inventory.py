"""The VMs vCenter knows: identity, placement, power, guest OS and datastore files.

Read in bulk (a ContainerView and one PropertyCollector round trip per type), never object by
object. VMs are addressed by their **instance UUID**, which survives vCenter restarts and
renames; managed object ids do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scanner.vcenter.connection import VCenterError, pyvmomi

VM_PROPS = [
    "name",
    "config.instanceUuid",
    "config.guestFullName",
    "config.files.vmPathName",
    "runtime.host",
    "runtime.powerState",
    "layoutEx.file",
    "customValue",
]


@dataclass(frozen=True)
class DatastoreFile:
    """A file of a VM as vCenter lists it: ``[datastore] dir/name``, its type and size."""

    name: str
    type: str  # config, nvram, log, diskDescriptor, diskExtent, snapshotData, snapshotMemory, ...
    size: int

    @property
    def datastore(self) -> str:
        return self.name[1:].split("]", 1)[0] if self.name.startswith("[") else ""

    @property
    def path(self) -> str:
        return self.name.split("]", 1)[1].strip() if "]" in self.name else self.name


@dataclass(frozen=True)
class VmInfo:
    moref: str
    name: str
    instance_uuid: str
    host: str
    power_state: str  # poweredOn, poweredOff, suspended
    guest_os: str
    vmx: str
    files: tuple[DatastoreFile, ...]
    attributes: dict[str, str]


def list_vms(si: Any) -> list[VmInfo]:
    """Every VM in the inventory (blocking; run through ``Connection.call``)."""
    vim, _vmodl = pyvmomi()
    content = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        rows = _retrieve(si, view, vim.VirtualMachine, VM_PROPS)
    finally:
        view.Destroy()
    hosts = _host_names(si)
    fields = {f.key: f.name for f in content.customFieldsManager.field or []}
    out = []
    for moref, props in rows:
        host = props.get("runtime.host")
        out.append(
            VmInfo(
                moref=moref,
                name=str(props.get("name", "")),
                instance_uuid=str(props.get("config.instanceUuid", "")),
                host=hosts.get(host._moId, host._moId) if host is not None else "",
                power_state=str(props.get("runtime.powerState", "")),
                guest_os=str(props.get("config.guestFullName", "")),
                vmx=str(props.get("config.files.vmPathName", "")),
                files=tuple(
                    DatastoreFile(f.name, str(f.type), int(f.size or 0)) for f in props.get("layoutEx.file") or []
                ),
                attributes={fields.get(v.key, str(v.key)): str(v.value) for v in props.get("customValue") or []},
            )
        )
    return sorted(out, key=lambda v: v.name)


def find_vm(si: Any, instance_uuid: str) -> Any:
    """The VM object for an instance UUID; VCenterError(not_found) when vCenter has none."""
    vm = si.content.searchIndex.FindByUuid(uuid=instance_uuid, vmSearch=True, instanceUuid=True)
    if vm is None:
        raise VCenterError(f"VM {instance_uuid}: not in vCenter (deleted?)", transient=False, not_found=True)
    return vm


def vm_info(si: Any, instance_uuid: str) -> VmInfo:
    vm = find_vm(si, instance_uuid)
    for info in list_vms(si):
        if info.moref == vm._moId:
            return info
    raise VCenterError(f"VM {instance_uuid}: vanished while listing", transient=False, not_found=True)


def datacenter_of(vm: Any) -> str:
    """The datacenter path (``dcPath``) holding ``vm``."""
    vim, _ = pyvmomi()
    parent = vm.parent
    while parent is not None and not isinstance(parent, vim.Datacenter):
        parent = parent.parent
    if parent is None:
        raise VCenterError(f"VM {vm._moId}: no datacenter above it", transient=False)
    return str(parent.name)


def _retrieve(si: Any, view: Any, kind: Any, paths: list[str]) -> list[tuple[str, dict[str, Any]]]:
    _, vmodl = pyvmomi()
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[
            pc.ObjectSpec(
                obj=view,
                skip=True,
                selectSet=[pc.TraversalSpec(name="view", path="view", skip=False, type=type(view))],
            )
        ],
        propSet=[pc.PropertySpec(type=kind, pathSet=paths)],
    )
    result = []
    for obj in si.content.propertyCollector.RetrieveContents([spec]):
        result.append((obj.obj._moId, {p.name: p.val for p in obj.propSet}))
    return result


def _host_names(si: Any) -> dict[str, str]:
    vim, _ = pyvmomi()
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.HostSystem], True)
    try:
        return {moref: str(props.get("name", moref)) for moref, props in _retrieve(si, view, vim.HostSystem, ["name"])}
    finally:
        view.Destroy()
