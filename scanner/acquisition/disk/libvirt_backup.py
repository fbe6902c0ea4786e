"""A running libvirt domain's disk, read as a point-in-time view without touching its files.

Sequence (libvirt's backup API, pull mode):

1. ``virDomainBackupBegin`` with a ``<domainbackup mode='pull'>`` for the one disk (every other
   disk ``backup='no'``): QEMU exports the disk's content at that instant over NBD on a unix
   socket in a private directory of the appliance; the guest keeps running, and what it
   overwrites afterwards is kept for the export in a scratch qcow2 in that directory;
2. ``qemu-img convert`` copies the export into a sparse raw file in that directory, which the
   scanner reads like any image;
3. :meth:`LibvirtDiskExport.release`: ``virDomainAbortJob`` ends the backup job, the directory
   (socket, scratch, copy) is removed.

Nothing is ever written to the guest's image files or their backing chain, and no overlay is
added to the domain: the disk's chain is the same before and after.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

import defusedxml.ElementTree as ET

from scanner.acquisition.disk.live import FrozenImage
from scanner.acquisition.libvirt import DEFAULT_URI, running_domain
from scanner.errors import FailedPrecondition, InvalidArgument, SourceError

COPY_TIMEOUT = 3600.0


class LibvirtDiskExport:
    """One disk (target name, e.g. ``vda``) of a running libvirt domain, exported once."""

    def __init__(self, domain: str, device: str, uri: str = DEFAULT_URI) -> None:
        self.device = device
        self.state = "not exported"
        self._conn, self._dom, self.uri = running_domain(domain, uri)
        self._workdir: Path | None = None
        self._job = False

    def freeze(self) -> FrozenImage:
        """Begin the pull backup and copy the export; returns the copy (raw) to read."""
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
        copy = self._workdir / "disk.raw"
        source = f"nbd+unix:///{self.device}?socket={socket}"
        try:
            subprocess.run(
                ["qemu-img", "convert", "-q", "-f", "raw", "-O", "raw", source, str(copy)],
                check=True,
                capture_output=True,
                text=True,
                timeout=COPY_TIMEOUT,
            )
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            self.release()
            raise SourceError(
                f"libvirt domain {self._dom.name()}", f"reading the export of {self.device}: {detail.strip()[:300]}"
            ) from e
        self.state = "exported (backup pull, point in time)"
        return FrozenImage(copy, "raw")

    def _disk_targets(self) -> list[str]:
        root = ET.fromstring(self._dom.XMLDesc(0))
        return [t.get("dev", "") for t in root.findall("./devices/disk[@device='disk']/target") if t.get("dev")]

    def release(self) -> None:
        """End the backup job and remove the export's directory; idempotent."""
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
        return {"disk.live": f"libvirt {self._dom.name()} {self.device}: {self.state}"}


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
