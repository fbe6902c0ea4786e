"""A live guest: its RAM read from outside, optionally paused for consistency.

Params: ``ram`` (the guest's RAM file) and/or ``qmp`` (its QMP socket: finds the RAM, pauses,
tells when the guest is gone), or ``libvirt`` (a libvirt domain name or UUID, ``libvirt_uri``
default ``qemu:///system``: the same through libvirtd); ``access`` (``auto``: QEMU's layout of guest RAM, each range
read from the file behind it where it is shared memory (zero-copy), else from QEMU's process
memory: any stock guest; ``file``: the one ``memory-backend-file`` through LibVMI, offsets taken
as physical addresses; ``process``: everything through ``/proc/PID/mem``); ``domain`` for the
kvm/xen drivers; ``driver`` (``file``;
``kvm``/``xen`` where the host has them); ``consistency`` (``running``: scan while the guest runs,
the default; ``paused``: pause, copy guest RAM into a host snapshot, resume, scan the copy, the
pause bounded by ``max_pause_seconds``; ``snapshot`` ``off``: stay paused for the whole scan). The
verdict's details record the mode and how long the guest was paused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanner.acquisition.live import PauseRecord, QemuGuest
from scanner.acquisition.memory.base import MemorySource
from scanner.acquisition.memory.qemuproc import QemuProcessMemory
from scanner.acquisition.memory.snapshot import RamSnapshot, available_memory, to_copy
from scanner.acquisition.memory.vmi import LibvmiMemory
from scanner.errors import InvalidArgument
from scanner.targets.awareness import memory_view
from scanner.targets.base import Skipped, Target, Unit

if TYPE_CHECKING:
    from scanner.acquisition.libvirt import LibvirtGuest

CONSISTENCY = ("running", "paused")
ACCESS = ("auto", "file", "process")
MAX_PAUSE_LIMIT = 3600.0


def _check_params(
    ram: str, qmp: str, libvirt: str, domain: str, consistency: str, max_pause: float, access: str
) -> None:
    if consistency not in CONSISTENCY:
        raise InvalidArgument("target.guest.consistency", f"must be one of {', '.join(CONSISTENCY)}")
    if not 0 < max_pause <= MAX_PAUSE_LIMIT:
        raise InvalidArgument("target.guest.max_pause_seconds", f"must be in (0, {MAX_PAUSE_LIMIT:.0f}]")
    if consistency == "paused" and not (qmp or libvirt):
        raise InvalidArgument("target.guest.qmp", "pausing the guest needs its QMP socket or libvirt domain")
    if access not in ACCESS:
        raise InvalidArgument("target.guest.access", f"must be one of {', '.join(ACCESS)}")
    if access == "process" and (ram or not (qmp or libvirt)):
        raise InvalidArgument("target.guest.access", "reading QEMU's process memory needs its QMP socket or domain")
    if qmp and libvirt:
        raise InvalidArgument("target.guest.libvirt", "give the QMP socket or the libvirt domain, not both")
    if not ram and not qmp and not domain and not libvirt:
        raise InvalidArgument("target.guest", "give the guest's RAM file, its QMP socket or its domain")


class GuestTarget(Target):
    kind = "guest"

    def __init__(
        self,
        ram: str = "",
        qmp: str = "",
        driver: str = "file",
        consistency: str = "running",
        max_pause: float = 30.0,
        kvmi_socket: str = "",
        domain: str = "",
        access: str = "auto",
        libvirt: str = "",
        libvirt_uri: str = "",
        snapshot: bool = True,
        os_params: Mapping[str, Any] | None = None,
        profile_cache: Path | None = None,
    ) -> None:
        """``os_params``: ``os`` (auto/processes/physical) and ``kernel``, as for memory images."""
        _check_params(ram, qmp, libvirt, domain, consistency, max_pause, access)
        self.consistency = consistency
        self.snapshot = snapshot
        self.max_pause = max_pause
        self._stack = ExitStack()
        self._pause: PauseRecord | None = None
        try:
            self.guest: QemuGuest | LibvirtGuest | None = None
            if qmp:
                self.guest = QemuGuest(qmp)
            elif libvirt:
                from scanner.acquisition.libvirt import LibvirtGuest

                self.guest = LibvirtGuest(libvirt, libvirt_uri)
            if self.guest is not None:
                self._stack.callback(self.guest.close)
            source = self._source(ram, driver, domain, kvmi_socket, access)
            self._stack.callback(source.close)
            self.source = source
            self._os_params, self._profile_cache = os_params or {}, profile_cache
            self._snapshot = ""
            self.memory = memory_view(source, self._os_params, profile_cache)
        except BaseException:
            self._stack.close()
            raise

    def _source(self, ram: str, driver: str, domain: str, kvmi_socket: str, access: str) -> MemorySource:
        probe = self.guest.gone if self.guest else None
        if driver != "file":
            if not domain:
                raise InvalidArgument("target.guest.domain", f"the {driver} driver needs the guest's domain name")
            return LibvmiMemory(domain, driver, kvmi_socket, probe=probe)
        if ram:
            return LibvmiMemory(ram, driver, probe=probe)
        assert self.guest is not None
        if access == "file":
            if not isinstance(self.guest, QemuGuest):
                raise InvalidArgument("target.guest.access", "file access needs the guest's QMP socket or RAM file")
            return LibvmiMemory(self.guest.ram_path(), driver, probe=probe)
        return QemuProcessMemory(self.guest.ram_layout(), probe=probe, through_process=access == "process")

    @classmethod
    def from_params(cls, params: Mapping[str, Any], profile_cache: Path | None = None) -> GuestTarget:
        try:
            max_pause = float(params.get("max_pause_seconds") or 30.0)
        except (TypeError, ValueError) as e:
            raise InvalidArgument("target.guest.max_pause_seconds", "must be a number") from e
        return cls(
            ram=str(params.get("ram") or ""),
            qmp=str(params.get("qmp") or ""),
            driver=str(params.get("driver") or "file"),
            consistency=str(params.get("consistency") or "running"),
            max_pause=max_pause,
            kvmi_socket=str(params.get("kvmi_socket") or ""),
            domain=str(params.get("domain") or ""),
            access=str(params.get("access") or "auto"),
            libvirt=str(params.get("libvirt") or ""),
            libvirt_uri=str(params.get("libvirt_uri") or ""),
            snapshot=str(params.get("snapshot") or "auto") != "off",
            os_params={k: params[k] for k in ("os", "kernel") if params.get(k)},
            profile_cache=profile_cache,
        )

    def plan(self) -> Iterator[Unit | Skipped]:
        if self.consistency == "paused" and self.guest is not None:
            self._pause_for_scan()
        yield from self.memory.plan()

    def deferred_plan(self) -> Iterator[Unit | Skipped]:
        yield from self.memory.deferred_plan()  # the page seams of the default mode

    def _pause_for_scan(self) -> None:
        """Paused mode: the guest is held only while its RAM is copied into a host snapshot,
        then resumed, and the copy is scanned. Where host memory cannot hold the copy, the
        guest stays paused for the scan (bounded by ``max_pause``), as the details say."""
        assert self.guest is not None
        needed = to_copy(self.source)
        if not self.snapshot:
            self._snapshot = "off: the guest stays paused for the scan"
            self._pause = self._stack.enter_context(self.guest.paused(self.max_pause))
            return
        if needed > available_memory() // 2:
            self._snapshot = f"none: {needed} bytes to copy, more than half the host's available memory"
            self._pause = self._stack.enter_context(self.guest.paused(self.max_pause))
            return
        with self.guest.paused(self.max_pause) as record:
            snapshot = RamSnapshot(self.source, threads=max(2, os.cpu_count() or 1))
        self._pause = record
        self._stack.callback(snapshot.close)
        self._snapshot = f"memfd, {needed} bytes copied while paused"
        self.memory = memory_view(snapshot, self._os_params, self._profile_cache)

    def finish(self) -> None:
        """Resume the guest as soon as the last window is scanned (after any background work on
        its memory has ended)."""
        self.memory.finish()
        self._stack.close()

    def details(self) -> Mapping[str, str]:
        out = {**self.memory.details(), "memory.format": self.source.format, "consistency": self.consistency}
        if self._pause is not None:
            out["paused_seconds"] = f"{self._pause.paused_seconds:.3f}"
            out["pause_cut_short"] = str(self._pause.cut_short).lower()
            out["guest_was_running"] = str(self._pause.was_running).lower()
        if self._snapshot:
            out["snapshot"] = self._snapshot
        return out

    def accounting(self) -> Mapping[str, int]:
        """QEMU's own bookkeeping of guest RAM (its RAM blocks) against the bytes of them mapped in
        guest-physical space and scanned; a block's bytes the guest cannot see at this moment (a
        legacy area shadowed by ROM) are counted, not scanned."""
        out = dict(self.memory.accounting())
        if isinstance(self.source, QemuProcessMemory):
            layout = self.source.layout
            out["qemu.ram_block_bytes"] = sum(layout.block_sizes.values())
            out["qemu.ram_mapped_bytes"] = layout.mapped
        return out

    def close(self) -> None:
        self.memory.finish()
        self._stack.close()
