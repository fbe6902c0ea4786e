"""A libvirt QEMU/KVM domain, named by its name or UUID: its QEMU process, RAM layout, pause.

Talks to libvirtd through libvirt's Python binding (``libvirt-python``), never through libvirt's
own monitor socket (libvirtd holds it) and never with a monitor command: libvirt marks a domain
"custom-monitor" tainted for any (``virsh qemu-monitor-command``), which administrators watch
for. The RAM layout is derived instead (:mod:`scanner.acquisition.pclayout`: the domain XML's
machine type and memory size, QEMU's ``/proc/PID/maps``) and checked against libvirt's own reader
of guest-physical memory (``virDomainMemoryPeek``, no taint): sampled pages must read the same
both ways. Pause and resume go through ``virDomainSuspend``/``virDomainResume``. QEMU's process
is the one whose command line carries the domain's ``-uuid``: exactly one must exist on this
host (memory must be read where the guest runs).

Contract: every failure to reach libvirtd, an unknown domain, a domain that is not running or
not a local QEMU one raises a :class:`~scanner.errors.ScannerError` with a one-line reason.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as ET

from scanner.acquisition.live import PauseRecord, bounded_pause
from scanner.acquisition.memory.qemuproc import PAGE, ProcessWatch, read_maps
from scanner.acquisition.pclayout import derive_layout
from scanner.acquisition.ramlayout import RamLayout
from scanner.errors import FailedPrecondition, NotFound, SourceError, Unavailable

DEFAULT_URI = "qemu:///system"
MAX_PROCESSES = 1_000_000
SAMPLES_PER_RANGE = 16  # pages of each RAM range read both ways to check the derived layout


def _binding() -> Any:
    try:
        import libvirt
    except ImportError as e:
        raise Unavailable("libvirt: unavailable: install the libvirt-python package") from e
    return libvirt


class LibvirtGuest:
    """One running libvirt domain on this host."""

    def __init__(self, domain: str, uri: str = DEFAULT_URI) -> None:
        self._libvirt = _binding()
        self._gone = ""
        self.layout_check = ""
        self._conn, self._dom, self.uri = running_domain(domain, uri)
        try:
            self.name, self.uuid = self._dom.name(), self._dom.UUIDString()
            self.pid = qemu_pid(self.uuid)
            self._watch = ProcessWatch(self.pid)
        except BaseException:
            self._conn.close()
            raise

    def ram_layout(self) -> RamLayout:
        """Where guest RAM is, derived without a monitor command and checked with memoryPeek."""
        where = f"libvirt domain {self.name}"
        machine, size = self._machine_and_memory()
        layout = derive_layout(self.pid, machine, size, read_maps(self.pid), where)
        self._check_with_peek(layout, where)
        return layout

    def _machine_and_memory(self) -> tuple[str, int]:
        try:
            root = ET.fromstring(self._dom.XMLDesc(0))
        except self._libvirt.libvirtError as e:
            raise SourceError(f"libvirt domain {self.name}", f"domain XML: {_first_line(e)}") from e
        os_type = root.find("./os/type")
        machine = os_type.get("machine", "") if os_type is not None else ""
        memory = root.find("./memory")
        if root.find("./maxMemory") is not None or len(root.findall("./cpu/numa/cell")) > 1:
            raise SourceError(f"libvirt domain {self.name}", "RAM in NUMA cells or hotplug DIMMs: layout not derived")
        if not machine or memory is None or not (memory.text or "").strip().isdigit():
            raise SourceError(f"libvirt domain {self.name}", "domain XML names no machine type or memory size")
        unit = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "b": 1, "bytes": 1}.get(memory.get("unit", "KiB"))
        if unit is None:
            raise SourceError(f"libvirt domain {self.name}", f"memory unit {memory.get('unit')!r}")
        return str(machine), int(memory.text or "0") * unit

    def _check_with_peek(self, layout: RamLayout, where: str) -> None:
        """Sampled pages read from QEMU's process equal what libvirt reads at the same guest-physical
        addresses; pages zero both ways prove nothing and are not counted. Live pages may change
        between the two reads, so most (not all) non-zero samples must agree. Read with ``pread``
        of ``/proc/PID/mem``: an untouched anonymous page reads as the kernel's zero page (nothing
        allocated); on huge pages a sampled hole takes one page of QEMU's own reservation."""
        compared = agreed = 0
        try:
            fd = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SourceError(where, f"/proc/{self.pid}/mem: {e.strerror}") from e
        try:
            for r in layout.ranges:
                step = max(PAGE, (r.length // SAMPLES_PER_RANGE) // PAGE * PAGE)
                for at in range(0, r.length - PAGE + 1, step):
                    ours = os.pread(fd, PAGE, r.host + at)
                    theirs = bytes(self._dom.memoryPeek(r.physical + at, PAGE, self._libvirt.VIR_MEMORY_PHYSICAL))
                    if ours.count(0) == PAGE and theirs.count(0) == PAGE:
                        continue
                    compared += 1
                    agreed += ours == theirs
        except (OSError, self._libvirt.libvirtError) as e:
            self._note_gone()
            raise SourceError(where, f"checking the RAM layout: {_first_line(e)}") from e
        finally:
            os.close(fd)
        if compared and agreed * 2 <= compared:
            raise SourceError(
                where,
                f"QEMU's RAM mapping and libvirt's memoryPeek disagree on {compared - agreed} of {compared} pages",
            )
        self.layout_check = f"{agreed} of {compared} non-zero sampled pages equal through memoryPeek"

    def running(self) -> bool:
        try:
            state, _reason = self._dom.state()
        except self._libvirt.libvirtError as e:
            raise SourceError(f"libvirt domain {self.name}", _first_line(e)) from e
        return bool(state == self._libvirt.VIR_DOMAIN_RUNNING)

    @contextmanager
    def paused(self, max_pause: float) -> Iterator[PauseRecord]:
        """Suspend through libvirt for at most ``max_pause`` seconds; always resume what this suspended."""
        with bounded_pause(self.running, self._suspend, self._resume, max_pause) as record:
            yield record

    def _suspend(self) -> None:
        try:
            self._dom.suspend()
        except self._libvirt.libvirtError as e:
            raise SourceError(f"libvirt domain {self.name}", f"suspend: {_first_line(e)}") from e

    def _resume(self) -> None:
        with contextlib.suppress(self._libvirt.libvirtError):  # a guest that is gone has nothing to resume
            self._dom.resume()

    def gone(self) -> str:
        """Why the guest is gone, or ""; no round trip to libvirtd (the QEMU process is watched)."""
        if not self._gone and self._watch.exited():
            self._gone = f"guest stopped: QEMU process {self.pid} of domain {self.name} exited"
        return self._gone

    def _note_gone(self) -> None:
        self.gone()

    def close(self) -> None:
        self._watch.close()
        with contextlib.suppress(Exception):
            self._conn.close()


def running_domain(domain: str, uri: str = DEFAULT_URI) -> tuple[Any, Any, str]:
    """(connection, domain, uri) of the running domain named ``domain`` (name or UUID)."""
    libvirt = _binding()
    uri = uri or DEFAULT_URI
    libvirt.registerErrorHandler(lambda *_: None, None)  # no stderr noise: errors raise
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise Unavailable(f"libvirt {uri}: cannot connect to libvirtd: {_first_line(e)}") from e
    try:
        try:
            try:
                dom = conn.lookupByUUIDString(str(uuid.UUID(domain)))
            except ValueError:
                dom = conn.lookupByName(domain)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFound(f"libvirt {uri}: no domain {domain!r}") from e
            raise Unavailable(f"libvirt {uri}: {_first_line(e)}") from e
        if not dom.isActive():
            raise FailedPrecondition(f"libvirt domain {dom.name()}: not running")
    except BaseException:
        conn.close()
        raise
    return conn, dom, uri


def qemu_pid(domain_uuid: str) -> int:
    """The pid of the one process on this host whose command line has ``-uuid domain_uuid``."""
    wanted = f"\0-uuid\0{domain_uuid}\0".encode()
    found: list[int] = []
    for entry in list(Path("/proc").iterdir())[:MAX_PROCESSES]:
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if wanted in cmdline + b"\0":
            found.append(int(entry.name))
    if len(found) != 1:
        what = "no QEMU process" if not found else f"{len(found)} QEMU processes"
        raise SourceError(f"libvirt domain {domain_uuid}", f"{what} on this host with that -uuid")
    return found[0]


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or ["libvirt error"])[0]
