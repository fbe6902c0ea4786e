# mypy: disallow-untyped-calls=False
"""A lab-side pyvmomi session to vcsim (tests, demo, benchmarks): arrange, inspect, break things.

Not the product's vCenter client (that is ``scanner.vcenter``): this one plays the vCenter
administrator and the world around the appliance.
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
import time
from pathlib import Path
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from scanner.lab.vcsim import PASSWORD, USER


class SimClient:
    def __init__(self, port: int) -> None:
        self.port = port
        self.si = SmartConnect(host="127.0.0.1", port=port, protocol="http", user=USER, pwd=PASSWORD)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            Disconnect(self.si)

    def reconnect(self) -> None:
        self.si = SmartConnect(host="127.0.0.1", port=self.port, protocol="http", user=USER, pwd=PASSWORD)

    @property
    def content(self) -> Any:
        return self.si.content

    def vm(self, name: str) -> Any:
        view = self.content.viewManager.CreateContainerView(self.content.rootFolder, [vim.VirtualMachine], True)
        try:
            return next(v for v in view.view if v.name == name)
        finally:
            view.Destroy()

    def uuid(self, name: str) -> str:
        return str(self.vm(name).config.instanceUuid)

    def wait(self, task: Any) -> None:
        deadline = time.monotonic() + 30
        while task.info.state not in ("success", "error") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert task.info.state == "success", task.info.error

    def nics(self, name: str) -> list[tuple[int, bool, bool]]:
        return [
            (d.key, d.connectable.connected, d.connectable.startConnected)
            for d in self.vm(name).config.hardware.device
            if isinstance(d, vim.vm.device.VirtualEthernetCard) and d.connectable is not None
        ]

    def set_nics(self, name: str, connected: bool, start: bool) -> None:
        vm = self.vm(name)
        changes = []
        for d in vm.config.hardware.device:
            if isinstance(d, vim.vm.device.VirtualEthernetCard) and d.connectable is not None:
                d.connectable.connected, d.connectable.startConnected = connected, start
                changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=d))
        self.wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=changes)))

    def add_nic(self, name: str, connected: bool, start: bool) -> None:
        vm = self.vm(name)
        nic = vim.vm.device.VirtualE1000(
            key=-1,
            backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network"),
            connectable=vim.vm.device.VirtualDevice.ConnectInfo(connected=connected, startConnected=start),
        )
        spec = vim.vm.device.VirtualDeviceSpec(operation="add", device=nic)
        self.wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[spec])))

    def attributes(self, name: str) -> dict[str, str]:
        names = {f.key: f.name for f in self.content.customFieldsManager.field or []}
        return {names.get(v.key, str(v.key)): v.value for v in self.vm(name).customValue or []}

    def set_attribute(self, name: str, field: str, value: str) -> None:
        manager = self.content.customFieldsManager
        keys = {f.name: f.key for f in manager.field or []}
        if field not in keys:
            keys[field] = manager.AddCustomFieldDef(name=field, moType=vim.VirtualMachine).key
        manager.SetField(entity=self.vm(name), key=keys[field], value=value)

    def snapshots(self, name: str) -> list[str]:
        vm = self.vm(name)
        tree = self._snapshot_tree(vm)
        out, stack = [], list(tree.rootSnapshotList if tree else [])
        while stack:
            node = stack.pop()
            out.append(node.name)
            stack.extend(node.childSnapshotList or [])
        return sorted(out)

    def events(self, name: str, type_name: str = "") -> list[Any]:
        spec = vim.event.EventFilterSpec(
            entity=vim.event.EventFilterSpec.ByEntity(entity=self.vm(name), recursion="self")
        )
        return [
            e
            for e in self.content.eventManager.QueryEvents(spec)
            if not type_name or type(e).__name__.endswith(type_name)
        ]

    def power_off(self, name: str) -> None:
        self.wait(self.vm(name).PowerOffVM_Task())

    def power_on(self, name: str) -> None:
        self.wait(self.vm(name).PowerOnVM_Task())

    def post_migrated(self, name: str) -> None:
        vm = self.vm(name)
        dc = self.content.rootFolder.childEntity[0]
        event = vim.event.DrsVmMigratedEvent(  # vcsim's VmMigratedEvent template is broken
            key=0,
            chainId=0,
            createdTime=datetime.datetime.now(datetime.UTC),
            userName="",
            vm=vim.event.VmEventArgument(vm=vm, name=vm.name),
            host=vim.event.HostEventArgument(host=vm.runtime.host, name=vm.runtime.host.name),
            sourceHost=vim.event.HostEventArgument(host=vm.runtime.host, name=vm.runtime.host.name),
            datacenter=vim.event.DatacenterEventArgument(datacenter=dc, name=dc.name),
            sourceDatacenter=vim.event.DatacenterEventArgument(datacenter=dc, name=dc.name),
            computeResource=vim.event.ComputeResourceEventArgument(
                computeResource=vm.runtime.host.parent, name=vm.runtime.host.parent.name
            ),
            ds=vim.event.DatastoreEventArgument(datastore=dc.datastore[0], name=dc.datastore[0].name),
            sourceDatastore=vim.event.DatastoreEventArgument(datastore=dc.datastore[0], name=dc.datastore[0].name),
        )
        self.content.eventManager.PostEvent(eventToPost=event)

    def destroy(self, name: str) -> None:
        vm = self.vm(name)
        if vm.runtime.powerState == "poweredOn":
            self.wait(vm.PowerOffVM_Task())
        self.wait(vm.Destroy_Task())

    def datastore_dir(self) -> Path:
        dc = self.content.rootFolder.childEntity[0]
        return Path(dc.datastore[0].info.url)

    def place_memory(self, name: str, vmem: Path, index: int = 1) -> Path:
        """The lab guest's RAM as the memory file of this VM's next avscan snapshot (ESXi naming)."""
        target = self.datastore_dir() / name / f"{name}-Snapshot{index}.vmem"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.hardlink_to(vmem)
        except OSError:
            shutil.copyfile(vmem, target)
        return target

    def place_disk(self, name: str, vmdk: Path) -> None:
        shutil.copyfile(vmdk, self.datastore_dir() / name / "disk1.vmdk")

    def _snapshot_tree(self, vm: Any) -> Any:
        from pyVmomi import vmodl

        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=vm)], propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=["snapshot"])]
        )
        for obj in self.content.propertyCollector.RetrieveContents([spec]):
            for p in obj.propSet:
                return p.val
        return None
