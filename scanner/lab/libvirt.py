"""A private libvirt daemon and a lab domain on it, for tests of libvirt guests.

:class:`LibvirtLab` starts ``virtlogd`` and ``libvirtd`` (Debian's libvirt, no systemd needed)
with their own config file, socket directory and pid files in a temporary directory, and stops
exactly those processes (by the pids they wrote) when done. :meth:`LibvirtLab.start_domain`
creates a transient domain the way an administrator would by default: TCG
(``<domain type='qemu'>``), default memory backing (anonymous RAM in QEMU), the lab's kernel and
initramfs, a serial console to a file, and **no network interface**. It returns once the guest
printed READY.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any
from xml.sax.saxutils import escape

from scanner.errors import Unavailable
from scanner.lab.console import is_ready
from scanner.lab.errors import LabError
from scanner.lab.image import build_image, cache_dir

DAEMONS = ("virtlogd", "libvirtd")


class LibvirtLab:
    """``with LibvirtLab.start() as lab:`` a libvirtd of our own; ``lab.uri`` connects to it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket_dir = workdir / "sock"
        self.uri = f"qemu:///system?socket={self.socket_dir}/libvirt-sock"
        self._pids: dict[str, int] = {}
        self._domains: list[Any] = []
        self._conn: Any = None

    @classmethod
    def start(cls, timeout: float = 60.0) -> LibvirtLab:
        for daemon in DAEMONS:
            if shutil.which(daemon) is None:
                raise Unavailable(f"unavailable: {daemon} not found (apt-get install libvirt-daemon-system)")
        workdir = Path(tempfile.mkdtemp(prefix="avscan-libvirt-"))
        workdir.chmod(0o755)  # QEMU runs as libvirt-qemu and reads the kernel from here
        lab = cls(workdir)
        try:
            lab._start_daemons(time.monotonic() + timeout)
        except BaseException:
            lab.stop()
            raise
        return lab

    def _start_daemons(self, deadline: float) -> None:
        self.socket_dir.mkdir()
        conf = self.workdir / "libvirtd.conf"
        conf.write_text(f'unix_sock_dir = "{self.socket_dir}"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n')
        for daemon, args in (("virtlogd", []), ("libvirtd", ["-f", str(conf)])):
            pidfile = self.workdir / f"{daemon}.pid"
            subprocess.run([daemon, "-d", "-p", str(pidfile), *args], check=True, capture_output=True, timeout=30)
            self._pids[daemon] = _wait_pid(pidfile, deadline)
        import libvirt

        while True:
            try:
                self._conn = libvirt.open(self.uri)
                return
            except libvirt.libvirtError as e:
                if time.monotonic() > deadline:
                    raise LabError(f"libvirtd did not answer on {self.uri}: {e}") from e
                time.sleep(0.1)

    def start_domain(
        self,
        memory_mib: int = 256,
        markers: int = 1,
        variant: str = "libvirt",
        timeout: float = 180.0,
        disk: Path | None = None,
        memory_backing: str = "",
    ) -> LabDomain:
        """Create a transient TCG domain with no NIC booting the lab image; wait for READY.
        ``disk``: a qcow2 image (in a directory QEMU may read) attached as ``vda`` (virtio).
        ``memory_backing``: the inside of a ``<memoryBacking>`` element (e.g. ``<source
        type='memfd'/><access mode='shared'/>``); none by default (anonymous RAM)."""
        image = build_image(cache_dir())
        name = f"avscan-lab-{uuid.uuid4().hex[:12]}"
        home = self.workdir / name
        home.mkdir(mode=0o755)
        kernel, initrd = home / "vmlinuz", home / "initramfs.cpio.gz"
        shutil.copyfile(image.kernel, kernel)
        shutil.copyfile(image.initramfs, initrd)
        console = home / "console.log"
        append = f"console=ttyS0 quiet panic=-1 avscan.markers={markers} avscan.variant={variant}"
        xml = DOMAIN_XML.format(
            name=name,
            memory=memory_mib,
            kernel=escape(str(kernel)),
            initrd=escape(str(initrd)),
            cmdline=escape(append),
            console=escape(str(console)),
            disk=DISK_XML.format(path=escape(str(disk))) if disk is not None else "",
            backing=f"\n  <memoryBacking>{memory_backing}</memoryBacking>" if memory_backing else "",
        )
        dom = self._conn.createXML(xml, 0)
        self._domains.append(dom)
        domain = LabDomain(dom, console, markers)
        deadline = time.monotonic() + timeout
        while not is_ready(domain.console_text()):
            if not dom.isActive():
                raise LabError(f"domain {name} stopped during boot: {domain.console_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise LabError(f"domain {name} not READY after {timeout:.0f}s")
            time.sleep(0.1)
        return domain

    def stop(self) -> None:
        """Destroy our domains, stop our daemons (by their pids), remove the directory."""
        for dom in self._domains:
            with contextlib.suppress(Exception):
                dom.destroy()
        self._domains = []
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        for daemon in reversed(DAEMONS):
            pid = self._pids.pop(daemon, 0)
            if pid > 0:
                _terminate(pid)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LibvirtLab:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LabDomain:
    """A running lab domain: its libvirt handle, console and markers."""

    def __init__(self, dom: Any, console: Path, markers: int) -> None:
        self.dom = dom
        self.name: str = dom.name()
        self.uuid: str = dom.UUIDString()
        self.console = console
        self.markers = markers

    def console_text(self) -> str:
        try:
            return self.console.read_bytes().decode("utf-8", "replace")
        except (FileNotFoundError, PermissionError):
            return ""

    def peek(self, address: int, size: int) -> bytes:
        """Guest-physical bytes through libvirt's own reader (``virDomainMemoryPeek``)."""
        import libvirt

        return bytes(self.dom.memoryPeek(address, size, libvirt.VIR_MEMORY_PHYSICAL))


DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory}</memory>{backing}
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <memballoon model='none'/>{disk}
  </devices>
</domain>
"""


DISK_XML = """
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{path}'/>
      <target dev='vda' bus='virtio'/>
    </disk>"""


def _wait_pid(pidfile: Path, deadline: float) -> int:
    while True:
        with contextlib.suppress(FileNotFoundError, ValueError):
            text = pidfile.read_text().strip()
            if text:
                return int(text)
        if time.monotonic() > deadline:
            raise LabError(f"no pid in {pidfile}")
        time.sleep(0.05)


def _terminate(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
