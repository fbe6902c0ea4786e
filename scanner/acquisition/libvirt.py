"""A libvirt QEMU/KVM domain, named by its name or UUID: its QEMU process, RAM layout, pause.

Talks to libvirtd through libvirt's Python binding (``libvirt-python``), never through libvirt's
own monitor socket (libvirtd holds it): QMP questions go through libvirtd
(``virDomainQemuMonitorCommand``, read-only queries only; libvirt marks the domain as having had
a custom monitor command, as ``virsh qemu-monitor-command`` does), pause and resume through
``virDomainSuspend``/``virDomainResume``. QEMU's process is the one whose command line carries
the domain's ``-uuid``: exactly one must exist on this host (memory must be read where the guest
runs).

Contract: every failure to reach libvirtd, an unknown domain, a domain that is not running or
not a local QEMU one raises a :class:`~scanner.errors.ScannerError` with a one-line reason.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scanner.acquisition.live import PauseRecord, bounded_pause
from scanner.acquisition.memory.qemuproc import ProcessWatch
from scanner.acquisition.ramlayout import RamLayout, query_layout
from scanner.errors import FailedPrecondition, NotFound, SourceError, Unavailable

DEFAULT_URI = "qemu:///system"
MAX_PROCESSES = 1_000_000


def _binding() -> tuple[Any, Any]:
    try:
        import libvirt
        import libvirt_qemu
    except ImportError as e:
        raise Unavailable("libvirt: unavailable: install the libvirt-python package") from e
    return libvirt, libvirt_qemu


class LibvirtGuest:
    """One running libvirt domain on this host."""

    def __init__(self, domain: str, uri: str = DEFAULT_URI) -> None:
        self._libvirt, self._qemu = _binding()
        self._gone = ""
        self._conn, self._dom, self.uri = running_domain(domain, uri)
        try:
            self.name, self.uuid = self._dom.name(), self._dom.UUIDString()
            self.pid = qemu_pid(self.uuid)
            self._watch = ProcessWatch(self.pid)
        except BaseException:
            self._conn.close()
            raise

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """One QMP command through libvirtd."""
        request = json.dumps({"execute": command, **({"arguments": arguments} if arguments else {})})
        try:
            reply = json.loads(self._qemu.qemuMonitorCommand(self._dom, request, 0))
        except self._libvirt.libvirtError as e:
            self._note_gone()
            raise SourceError(f"libvirt domain {self.name}", f"{command}: {_first_line(e)}") from e
        if "error" in reply:
            raise SourceError(f"libvirt domain {self.name}", f"{command}: {reply['error'].get('desc')}")
        return reply.get("return")

    def ram_layout(self) -> RamLayout:
        return query_layout(self.execute, self.pid)

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
    libvirt, _ = _binding()
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
