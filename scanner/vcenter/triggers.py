"""What starts a scan: vCenter events (power-on, migration) and the ``avscan.request`` attribute.

Events: a PropertyCollector filter on an EventHistoryCollector's ``latestPage`` (events of the
policy's types) through ``WaitForUpdatesEx`` with a bounded wait, so a round never blocks longer
than ``poll_seconds``. Requests: one bulk read of the VMs' custom values per round.

Contract: events are handled in key order and only above the persisted cursor (the last key
handled, per vCenter instance), so a restart neither repeats nor misses an event still in the
collector's page (1000 events); a larger gap is logged. A fresh install starts at the newest
event (no scans for history). Attribute requests are durable in vCenter itself: one still set
after a restart is seen again and coalesced with the job it already started. A request is acted
on once: its job key is the VM and the number of clears vCenter had confirmed when the sweep
began (``seen_at``), so a sweep that read the value before the clear landed finds the job made.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from scanner.vcenter.connection import pyvmomi
from scanner.vcenter.inventory import list_vms

log = logging.getLogger(__name__)

EVENT_TYPES = {
    "power_on": ("VmPoweredOnEvent", "DrsVmPoweredOnEvent"),
    "migrate": ("VmMigratedEvent", "DrsVmMigratedEvent", "VmRelocatedEvent"),
}
REQUEST_ATTRIBUTE = "avscan.request"
PAGE = 1000


@dataclass(frozen=True)
class Trigger:
    reason: str  # power_on, migrate, attribute, api
    vm_uuid: str
    vm_name: str
    host: str
    event_key: int | None = None  # vCenter event key (event triggers)
    value: str = ""  # the avscan.request value (attribute triggers)
    seen_at: float = 0.0  # attribute triggers: when the sweep that read the value began


class Watcher:
    """Blocking rounds (run each through ``Connection.call``); state is rebuilt after a session loss."""

    def __init__(self, triggers: frozenset[str], cursor: int | None) -> None:
        self.triggers = triggers
        self.cursor = cursor
        self._filter: Any = None
        self._collector: Any = None
        self._view: Any = None
        self._version = ""
        self._si: Any = None

    def reset(self) -> None:
        self._filter = self._collector = self._view = self._si = None
        self._version = ""

    def _setup(self, si: Any) -> None:
        vim, vmodl = pyvmomi()
        pc = vmodl.query.PropertyCollector
        content = si.content
        ids = [t for name in ("power_on", "migrate") if name in self.triggers for t in EVENT_TYPES[name]]
        objects, props = [], []
        if ids:
            spec = vim.event.EventFilterSpec(eventTypeId=ids, maxCount=PAGE)
            self._collector = content.eventManager.CreateCollectorForEvents(filter=spec)
            objects.append(pc.ObjectSpec(obj=self._collector))
            props.append(pc.PropertySpec(type=vim.event.EventHistoryCollector, pathSet=["latestPage"]))
        if objects:
            spec = pc.FilterSpec(objectSet=objects, propSet=props)
            self._filter = content.propertyCollector.CreateFilter(spec, True)
        self._version = ""
        self._si = si

    def round(self, si: Any, max_wait: float) -> tuple[list[Trigger], int | None]:
        """Triggers since the last round, and the newest event key seen (to persist with them)."""
        _vim, vmodl = pyvmomi()
        if self._si is not si:
            self.reset()
            self._setup(si)
        found: list[Trigger] = self._sweep_requests(si) if "attribute" in self.triggers else []
        if self._filter is None:
            time.sleep(max_wait)
            return found, None
        options = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=max(1, int(max_wait)))
        update = si.content.propertyCollector.WaitForUpdatesEx(self._version, options)
        if update is None:
            return found, None
        self._version = update.version
        newest: int | None = None
        for fs in update.filterSet or []:
            for obj in fs.objectSet or []:
                for change in obj.changeSet or []:
                    if change.name == "latestPage":
                        events, newest_here = self._events(si, change.val or [])
                        found += events
                        newest = max(newest or 0, newest_here) if newest_here is not None else newest
        return found, newest

    def _events(self, si: Any, page: list[Any]) -> tuple[list[Trigger], int | None]:
        keys = [int(e.key) for e in page]
        if self.cursor is None:  # first start: history is not a trigger; an empty history is cursor 0,
            self.cursor = max(keys, default=0)  # so the first event after it is one (persisted now)
            return [], self.cursor
        if not keys:
            return [], None
        fresh = sorted((e for e in page if int(e.key) > self.cursor), key=lambda e: int(e.key))
        if fresh and len(page) >= PAGE and min(keys) > self.cursor + 1:
            log.warning("vCenter events %d-%d may have been missed (beyond the page)", self.cursor + 1, min(keys) - 1)
        out = []
        for e in fresh:
            reason = next((r for r, types in EVENT_TYPES.items() if type(e).__name__.rsplit(".", 1)[-1] in types), "")
            vm = e.vm.vm if e.vm is not None else None
            if not reason or vm is None:
                continue
            try:
                uuid = str(vm.config.instanceUuid)
            except Exception:  # the VM is gone already: nothing to scan
                log.info("event %d: VM %s no longer exists", e.key, e.vm.name)
                continue
            host = e.host.name if e.host is not None else ""
            out.append(Trigger(reason, uuid, str(e.vm.name), str(host), event_key=int(e.key)))
        newest = max(int(e.key) for e in page)
        self.cursor = max(self.cursor, newest)
        return out, newest

    def _sweep_requests(self, si: Any) -> list[Trigger]:
        """VMs whose ``avscan.request`` is set: one bulk read per round.

        A sweep rather than a property filter on ``customValue``: vcsim does not notify those
        changes, and a sweep also catches requests set while the service was down.
        """
        keys = [f.key for f in si.content.customFieldsManager.field or [] if f.name == REQUEST_ATTRIBUTE]
        if not keys:
            return []
        out = []
        seen_at = time.time()  # before the read: a clear confirmed after this may not be in it
        for vm in list_vms(si):
            value = vm.attributes.get(REQUEST_ATTRIBUTE, "").strip()
            if value:
                out.append(Trigger("attribute", vm.instance_uuid, vm.name, vm.host, value=value, seen_at=seen_at))
        return out
