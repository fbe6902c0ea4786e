"""A running libvirt domain's disk, read as a point-in-time view without touching its files.

Sequence (libvirt's backup API, pull mode):

1. ``virDomainBackupBegin`` with a ``<domainbackup mode='pull'>`` for the one disk (every other
   disk ``backup='no'``): QEMU exports the disk's content at that instant over NBD on a unix
   socket in a private directory of the appliance; the guest keeps running, and what it
   overwrites afterwards is kept for the export in a scratch qcow2 in that directory;
2. the scanner reads the export in place over NBD (:class:`~scanner.acquisition.disk.nbd.NbdDisk`,
   libnbd): only what the walk asks for (volume tables, filesystem metadata, the files it scans)
   crosses the socket, nothing is copied to the appliance;
3. :meth:`LibvirtDiskExport.release`: the NBD connection is closed, ``virDomainAbortJob`` ends
   the backup job, the directory (socket, scratch) is removed.

Nothing is ever written to the guest's image files or their backing chain, and no overlay is
added to the domain: the disk's chain is the same before and after.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

import defusedxml.ElementTree as ET

from scanner.acquisition.disk.nbd import NbdDisk, NbdError
from scanner.acquisition.libvirt import DEFAULT_URI, running_domain
from scanner.errors import FailedPrecondition, InvalidArgument, SourceError


class LibvirtDiskExport:
    """One disk (target name, e.g. ``vda``) of a running libvirt domain, exported once."""

    def __init__(self, domain: str, device: str, uri: str = DEFAULT_URI) -> None:
        self.device = device
        self.state = "not exported"
        self._conn, self._dom, self.uri = running_domain(domain, uri)
        self._workdir: Path | None = None
        self._job = False
        self._disk: NbdDisk | None = None
        self.export_size = 0
        self.bytes_read = 0

    @property
    def uri_of_export(self) -> str:
        return f"nbd+unix:///{self.device}?socket={self._workdir / 'nbd.sock'}" if self._workdir else ""

    def open(self) -> NbdDisk:
        """Begin the pull backup and connect to its export; returns the disk as the guest sees it."""
        import libvirt

        disks = self._disk_targets()
        if self.device not in disks:
            self.release()
            raise InvalidArgument(
                "target.disk.device",
                f"domain {self._dom.name()} has no disk {self.device!r} (disks: {', '.join(disks) or 'none'})",
            )
        self._workdir = Path(tempfile.mkdtemp(prefix="avscan-backup-"))
        self._workdir.chmod(0o777)  # QEMU (another user) creates the socket and the scratch file
        socket, scratch = self._workdir / "nbd.sock", self._workdir / "scratch.qcow2"
        try:
            self._dom.backupBegin(_backup_xml(disks, self.device, socket, scratch), None, 0)
        except libvirt.libvirtError as e:
            self.release()
            raise FailedPrecondition(f"libvirt domain {self._dom.name()}: backup of {self.device}: {e}") from e
        self._job = True
        try:
            self._disk = NbdDisk(self.uri_of_export)
        except NbdError as e:
            self.release()
            raise SourceError(f"libvirt domain {self._dom.name()}", f"reading the export of {self.device}: {e}") from e
        self.export_size = self._disk.size
        self.state = "exported (backup pull, point in time), read in place over NBD"
        return self._disk

    def _disk_targets(self) -> list[str]:
        root = ET.fromstring(self._dom.XMLDesc(0))
        return [t.get("dev", "") for t in root.findall("./devices/disk[@device='disk']/target") if t.get("dev")]

    def release(self) -> None:
        """Close the NBD connection, end the backup job, remove the export's directory; idempotent."""
        if self._disk is not None:
            self.bytes_read = self._disk.bytes_read
            self._disk.close()
            self._disk = None
        if self._job:
            with contextlib.suppress(Exception):
                self._dom.abortJob()
            self._job = False
            self.state = "released"
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        with contextlib.suppress(Exception):
            self._conn.close()

    def details(self) -> dict[str, str]:
        read = self._disk.bytes_read if self._disk is not None else self.bytes_read
        return {
            "disk.live": f"libvirt {self._dom.name()} {self.device}: {self.state}",
            "disk.export": f"{read} of {self.export_size} bytes read from the export",
        }


def _backup_xml(disks: list[str], device: str, socket: Path, scratch: Path) -> str:
    entries = []
    for dev in disks:
        if dev == device:
            entries.append(
                f"<disk name={quoteattr(dev)} backup='yes' type='file'><scratch file={quoteattr(str(scratch))}/></disk>"
            )
        else:
            entries.append(f"<disk name={quoteattr(dev)} backup='no'/>")
    return (
        f"<domainbackup mode='pull'><server transport='unix' socket={quoteattr(str(socket))}/>"
        f"<disks>{''.join(entries)}</disks></domainbackup>"
    )
