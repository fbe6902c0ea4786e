"""Guest memory and disks from vSphere: snapshot with memory, download, always remove the snapshot.

Contract:
- The snapshot is named ``avscan-<job id>``, so a crash between creating and removing it is
  repaired at the next start by name (``remove_snapshot`` is idempotent: no snapshot, or no VM,
  is success).
- Files come through vCenter's datastore file access (``GET /folder/<path>?dcPath=&dsName=`` with
  the session cookie), streamed to disk; a short read or an HTTP error is an error, never a
  silently truncated image.
- The memory file is the snapshot's ``memoryKey`` file in ``layoutEx``; when vCenter lists none
  (vcsim does not) the ``.vmem`` named like the ``.vmsn`` is tried, as ESXi names them. An empty
  checkpoint is not kept (the ``.vmem`` is then read flat, right for guests under 3 GiB) and the
  job notes say so.
- Disks: the files of the snapshot's disk chains (the frozen parent disks).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlencode

from scanner.vcenter.connection import Connection, VCenterError, pyvmomi
from scanner.vcenter.inventory import DatastoreFile, datacenter_of, find_vm, list_vms

log = logging.getLogger(__name__)
CHUNK = 1 << 20


@dataclass
class Acquired:
    directory: Path
    memory: Path | None = None
    disks: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bytes: int = 0


def snapshot_name(job_id: str) -> str:
    return f"avscan-{job_id}"


def take_snapshot(
    conn: Connection, si: Any, vm_uuid: str, name: str, description: str = "avscan: memory and disk acquisition"
) -> str:
    """Create the snapshot (with memory when the VM runs); returns its managed object id."""
    vm = find_vm(si, vm_uuid)
    existing = _find_snapshot(vm, name)
    if existing is not None:  # a resumed job: reuse it
        return str(existing._moId)
    memory = str(vm.runtime.powerState) == "poweredOn"
    task = vm.CreateSnapshot_Task(name=name, description=description, memory=memory, quiesce=False)
    snap = conn.wait_task(si, task, f"snapshot {name} of {vm.name}")
    return str(snap._moId)


def remove_snapshot(conn: Connection, si: Any, vm_uuid: str, name: str) -> str:
    """Remove every snapshot called ``name``; returns what happened (idempotent)."""
    try:
        vm = find_vm(si, vm_uuid)
    except VCenterError as e:
        if e.not_found:
            return "VM no longer exists; its snapshots went with it"
        raise
    removed = 0
    while (snap := _find_snapshot(vm, name)) is not None:
        task = snap.RemoveSnapshot_Task(removeChildren=False)
        conn.wait_task(si, task, f"remove snapshot {name} of {vm.name}")
        removed += 1
    return f"removed {removed} snapshot(s)" if removed else "no snapshot to remove"


def snapshot_files(si: Any, vm_uuid: str, snap_moref: str) -> tuple[DatastoreFile | None, list[DatastoreFile], str]:
    """(memory-or-checkpoint file, disk files of the frozen chains, datacenter) for a snapshot."""
    vm = find_vm(si, vm_uuid)
    files = {f.key: DatastoreFile(f.name, str(f.type), int(f.size or 0)) for f in vm.layoutEx.file or []}
    for snap in vm.layoutEx.snapshot or []:
        if snap.key._moId != snap_moref:
            continue
        memory = files.get(snap.memoryKey) if snap.memoryKey not in (None, -1) else None
        if memory is None and snap.dataKey in files:
            data = files[snap.dataKey]
            memory = DatastoreFile(data.name, "snapshotData", data.size)  # the .vmsn; .vmem found beside it
        disks = [files[k] for d in snap.disk or [] for chain in d.chain or [] for k in chain.fileKey if k in files]
        return memory, disks, datacenter_of(vm)
    raise VCenterError(f"snapshot {snap_moref} of {vm.name}: not in layoutEx", transient=False)


def download(conn: Connection, dc: str, f: DatastoreFile, dest: Path, timeout: float) -> int:
    """Stream one datastore file to ``dest``; VCenterError(not_found) on 404."""
    url = "/folder/" + quote(f.path) + "?" + urlencode({"dcPath": dc, "dsName": f.datastore})
    http = conn.http(timeout)
    try:
        http.request("GET", url, headers={"Cookie": conn.cookie()})
        response = http.getresponse()
        if response.status == 404:
            raise VCenterError(f"{f.name}: not on the datastore (HTTP 404)", transient=False, not_found=True)
        if response.status != 200:
            raise VCenterError(f"{f.name}: download failed: HTTP {response.status} {response.reason}")
        expected = int(response.getheader("Content-Length") or -1)
        written = 0
        with dest.open("wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                written += len(chunk)
        if expected >= 0 and written != expected:
            raise VCenterError(f"{f.name}: short download ({written} of {expected} bytes)")
        return written
    except OSError as e:
        raise VCenterError(f"{f.name}: download failed: {e}") from e
    finally:
        http.close()


def fetch(conn: Connection, si: Any, vm_uuid: str, snap_moref: str, directory: Path, with_disks: bool) -> Acquired:
    """Download the snapshot's memory (``.vmem`` + ``.vmsn``) and, if asked, its frozen disks."""
    acquired = Acquired(directory)
    directory.mkdir(parents=True, exist_ok=True)
    memory, disks, dc = snapshot_files(si, vm_uuid, snap_moref)
    timeout = conn.settings.download_timeout
    if memory is None:
        acquired.notes.append("memory: the snapshot has no memory file (VM not powered on?)")
    else:
        _fetch_memory(conn, dc, memory, directory, timeout, acquired)
    if with_disks:
        for f in disks:
            target = directory / "disks" / PurePosixPath(f.path).name
            target.parent.mkdir(exist_ok=True)
            acquired.bytes += download(conn, dc, f, target, timeout)
            if f.type == "diskDescriptor" or (f.name.endswith(".vmdk") and "-flat" not in f.name):
                acquired.disks.append(target)
    return acquired


def _fetch_memory(conn: Connection, dc: str, f: DatastoreFile, directory: Path, timeout: float, out: Acquired) -> None:
    stem = PurePosixPath(f.path).with_suffix("")
    vmem = DatastoreFile(f"[{f.datastore}] {stem}.vmem", "snapshotMemory", 0) if f.type == "snapshotData" else f
    vmsn = DatastoreFile(f"[{f.datastore}] {stem}.vmsn", "snapshotData", 0)
    local = directory / (PurePosixPath(vmem.path).stem + ".vmem")
    try:
        out.bytes += download(conn, dc, vmem, local, timeout)
    except VCenterError as e:
        if not e.not_found:
            raise
        local.unlink(missing_ok=True)
        out.notes.append(f"memory: {vmem.name} not on the datastore; memory not scanned")
        return
    out.memory = local
    checkpoint = local.with_suffix(".vmsn")
    try:
        size = download(conn, dc, vmsn, checkpoint, timeout)
    except VCenterError as e:
        if not e.not_found:
            raise
        size = 0
    out.bytes += size
    if size == 0:
        checkpoint.unlink(missing_ok=True)
        out.notes.append(f"memory: {vmsn.name} is empty or missing; {vmem.name} read as flat RAM")


def discard(acquired: Acquired | Path) -> None:
    """Delete downloaded files (after the scans that read them are final)."""
    directory = acquired.directory if isinstance(acquired, Acquired) else acquired
    shutil.rmtree(directory, ignore_errors=True)


def _find_snapshot(vm: Any, name: str) -> Any:
    """The snapshot called ``name``, or None. Read through RetrieveContents: vcsim's single-property
    read of an unset ``snapshot`` panics."""
    _, vmodl = pyvmomi()
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=vm)], propSet=[pc.PropertySpec(type=type(vm), pathSet=["snapshot"])]
    )
    tree = None
    for obj in _collector(vm).RetrieveContents([spec]):
        tree = next((p.val for p in obj.propSet if p.name == "snapshot"), None)
    if tree is None:
        return None
    stack = list(tree.rootSnapshotList or [])
    while stack:
        node = stack.pop()
        if node.name == name:
            return node.snapshot
        stack.extend(node.childSnapshotList or [])
    return None


def _collector(vm: Any) -> Any:
    vim, _ = pyvmomi()
    return vim.ServiceInstance("ServiceInstance", vm._stub).content.propertyCollector


def expire_snapshots(conn: Connection, si: Any, prefix: str, older_than: float) -> list[str]:
    """Remove every snapshot whose name starts with ``prefix`` created before ``older_than``
    (seconds since the epoch), on every VM; returns "<vm>: <name>" of those removed."""
    removed = []
    for info in list_vms(si):
        try:
            vm = find_vm(si, info.instance_uuid)
        except VCenterError:
            continue  # gone meanwhile
        for node in _snapshot_nodes(vm):
            if node.name.startswith(prefix) and node.createTime.timestamp() < older_than:
                conn.wait_task(si, node.snapshot.RemoveSnapshot_Task(removeChildren=False), f"expire {node.name}")
                removed.append(f"{vm.name}: {node.name}")
    return removed


def _snapshot_nodes(vm: Any) -> list[Any]:
    """Every node of the VM's snapshot tree (read as in ``_find_snapshot``)."""
    _, vmodl = pyvmomi()
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=vm)], propSet=[pc.PropertySpec(type=type(vm), pathSet=["snapshot"])]
    )
    tree = None
    for obj in _collector(vm).RetrieveContents([spec]):
        tree = next((p.val for p in obj.propSet if p.name == "snapshot"), None)
    out, stack = [], list(tree.rootSnapshotList or []) if tree is not None else []
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.childSnapshotList or [])
    return out
