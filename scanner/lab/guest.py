"""Boot and drive one lab guest under QEMU, with its RAM in a shared ``/dev/shm`` file.

Contract: :meth:`LabGuest.start` returns only once the guest printed READY (or raises, after
cleaning up). :meth:`LabGuest.stop` is idempotent and always removes the RAM file, the QMP
socket and the work directory; it runs on ``with`` exit, at interpreter exit, and on failure.
Every guest gets unique names, so several can run at once.

A guest started with ``clonable=True`` can be saved as a template (:meth:`LabGuest.save_template`)
and cloned (:meth:`LabGuest.clone`); see :mod:`scanner.lab.clone`.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from scanner.acquisition.qmp import QmpClient, QmpError
from scanner.errors import InvalidArgument, Unavailable
from scanner.lab import accel as accel_mod
from scanner.lab.clone import (
    IGNORE_SHARED,
    LabSnapshot,
    connect_unix,
    receive_migration,
    sparse_copy,
    wait_migration,
    work_done,
    workload_pids,
)
from scanner.lab.console import (
    GuestModule,
    GuestProcess,
    IomemRange,
    is_ready,
    lime_outcome,
    parse_iomem,
    parse_modules,
    parse_processes,
)
from scanner.lab.debs import FLAVOURS, is_kernel
from scanner.lab.errors import LabError
from scanner.lab.image import LabImage, build_image, cache_dir
from scanner.lab.lime import build_lime

QEMU = "qemu-system-x86_64"
SHM_DIR = Path("/dev/shm")  # noqa: S108 - guest RAM must be a shared-memory file
SHM_PREFIX = "avscan-lab-"
MIN_MEMORY_MIB, MAX_MEMORY_MIB = 64, 4096
LOW_RAM_LIMIT = 0xB0000000  # q35 keeps RAM up to this size below 4 GiB; larger RAM splits at 2 GiB
DISK_BUSES = ("virtio", "ide", "nvme")  # nvme: built into the cloud kernel, virtio-blk is a module there
LIME_DEVICE = "nvme0n1"  # the disk a LiME guest dumps to
# the RAM file of the lab; plain -m; memory-backend-memfd; huge pages: a private file on the
# hugetlbfs mounted at ``hugetlbfs`` (share=off), a memfd of huge pages
RAM_KINDS = ("file", "anonymous", "memfd", "hugetlbfs", "memfd-hugetlb")
MAX_MARKERS = 64
_VARIANT_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_live: set[LabGuest] = set()


def sweep_stale_shm() -> None:
    """Remove RAM files left by lab processes that died without cleaning up."""
    for path in SHM_DIR.glob(f"{SHM_PREFIX}*"):
        owner = path.name[len(SHM_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            path.unlink(missing_ok=True)


def _check_variant(name: str, variant: str) -> None:
    if not _VARIANT_RE.match(variant):
        raise InvalidArgument(name, f"{variant!r}: expected 1-64 of [A-Za-z0-9._-]")


def _check_ram(ram: str, fill_mib: int, memory_mib: int, clonable: bool, hugetlbfs: Path | None = None) -> None:
    if ram not in RAM_KINDS:
        raise InvalidArgument("ram", f"{ram!r}: expected one of {', '.join(RAM_KINDS)}")
    if (ram == "hugetlbfs") != (hugetlbfs is not None):
        raise InvalidArgument("hugetlbfs", "a hugetlbfs mount directory goes with ram='hugetlbfs', and only with it")
    if not 0 <= fill_mib <= memory_mib - 64:
        raise InvalidArgument("fill_mib", f"{fill_mib}: expected 0..{memory_mib - 64}")
    if clonable and ram != "file":
        raise InvalidArgument("ram", "a clonable guest keeps its RAM in a file")


def _check_host() -> None:
    if shutil.which(QEMU) is None:
        raise Unavailable(f"unavailable: {QEMU} not found (apt-get install qemu-system-x86)")
    if not SHM_DIR.is_dir():
        raise Unavailable(f"unavailable: {SHM_DIR} does not exist")
    sweep_stale_shm()


class LabGuest:
    """A running guest. Use ``with LabGuest.start(...) as g:``."""

    def __init__(
        self,
        image: LabImage,
        memory_mib: int,
        markers: int,
        variant: str,
        disk: Path | None = None,
        bus: str = "virtio",
        load_modules: bool = False,
        clonable: bool = False,
        ram: str = "file",
        fill_mib: int = 0,
        lime_initramfs: Path | None = None,
        hugetlbfs: Path | None = None,
    ) -> None:
        self.image = image
        self.initramfs = lime_initramfs or image.initramfs
        self.lime = lime_initramfs is not None
        self.ram = ram
        self.hugetlbfs = hugetlbfs
        self.fill_mib = fill_mib
        self.load_modules = load_modules
        self.disk = disk
        self.disk_bus = bus
        self.memory_mib = memory_mib
        self.markers = markers
        self.variant = variant
        self.clonable = clonable
        token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.workdir = Path(tempfile.mkdtemp(prefix="avlab-"))
        self.ram_path = SHM_DIR / f"{SHM_PREFIX}{token}"
        self.qmp_path = self.workdir / "qmp.sock"
        self.scanner_qmp_path = self.workdir / "qmp-scanner.sock"
        self.console_path = self.workdir / "console.log"
        self.command_path = self.workdir / "cmd.sock"  # ttyS1 of a clonable guest
        self.stderr_path = self.workdir / "qemu.stderr"
        self.accel = ""
        self.boot_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp: QmpClient | None = None
        self._procs: list[GuestProcess] | None = None
        self._console_prefix = ""  # a clone's template console, up to the save
        self.workload_pids: list[int] = []

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        memory_mib: int = 256,
        markers: int = 1,
        variant: str = "0",
        timeout: float = 120.0,
        kvm_timeout: float = 10.0,
        cache: Path | None = None,
        flavour: str = "cloud-amd64",
        disk: Path | None = None,
        disk_bus: str = "virtio",
        load_modules: bool = False,
        clonable: bool = False,
        ram: str = "file",
        fill_mib: int = 0,
        lime: bool = False,
        hugetlbfs: Path | None = None,
    ) -> LabGuest:
        """Build the image if needed, boot, and wait for READY (``timeout`` seconds under TCG).

        With KVM, a boot that is not READY after ``kvm_timeout`` is retried under TCG. ``flavour``
        picks the Debian kernel: ``cloud-amd64`` (the default), ``amd64`` or ``rt-amd64`` (apt's
        current build), or one versioned package such as ``linux-image-6.1.0-47-amd64``. ``disk``
        attaches a qcow2 image as drive ``labdisk`` (``disk_bus``: ``virtio``, ``ide`` or ``nvme``).
        ``load_modules`` makes init insmod the image's kernel modules (``image.GUEST_MODULES``) first.
        ``clonable`` adds the command port (ttyS1) a template and its clones need; no ``disk`` then.
        ``ram``: ``file`` (shared RAM file :attr:`ram_path`, the default), ``anonymous`` (plain
        ``-m``, as QEMU, libvirt and OpenStack start guests), ``memfd`` (``memory-backend-memfd``),
        ``hugetlbfs`` (a private file QEMU makes in the hugetlbfs mounted at ``hugetlbfs``:
        ``memory-backend-file,share=off``) or ``memfd-hugetlb`` (``memory-backend-memfd,hugetlb=on``);
        the huge pages must be reserved (``/proc/sys/vm/nr_hugepages``) by the caller.
        ``fill_mib``: before its processes start, init writes that many MiB of random bytes to a
        tmpfs and deletes them, so that much guest RAM holds non-zero data (a guest that has used
        its memory).
        ``lime``: once its workers are up, the guest dumps its memory with LiME's own kernel module
        (built for the lab kernel, :mod:`scanner.lab.lime`) onto ``disk``, which must be on the
        ``nvme`` bus (the cloud kernel's built-in disk driver); see :meth:`lime_ranges`.
        """
        _check_ram(ram, fill_mib, memory_mib, clonable, hugetlbfs)
        if disk_bus not in DISK_BUSES:
            raise InvalidArgument("disk_bus", f"{disk_bus!r}: expected one of {', '.join(DISK_BUSES)}")
        if lime and (disk is None or disk_bus != "nvme"):
            raise InvalidArgument("lime", "a LiME dump needs a disk on the nvme bus to write to")
        if not MIN_MEMORY_MIB <= memory_mib <= MAX_MEMORY_MIB:
            raise InvalidArgument("memory_mib", f"{memory_mib}: expected {MIN_MEMORY_MIB}..{MAX_MEMORY_MIB}")
        if not 0 <= markers <= MAX_MARKERS:
            raise InvalidArgument("markers", f"{markers}: expected 0..{MAX_MARKERS}")
        _check_variant("variant", variant)
        if clonable and disk is not None:
            raise InvalidArgument("disk", "a clonable guest has no disk (clones would share it)")
        _check_host()
        if not is_kernel(flavour):
            raise InvalidArgument(
                "flavour", f"{flavour!r}: expected one of {', '.join(FLAVOURS)} or linux-image-<version>-<flavour>"
            )
        cache = cache or cache_dir()
        image = build_image(cache, flavour)
        initramfs = build_lime(image, cache).initramfs if lime else None
        for accel in accel_mod.candidates(cache, image.key):
            guest = cls(
                image,
                memory_mib,
                markers,
                variant,
                disk,
                disk_bus,
                load_modules,
                clonable,
                ram,
                fill_mib,
                lime_initramfs=initramfs,
                hugetlbfs=hugetlbfs,
            )
            _live.add(guest)
            try:
                guest._boot(accel, kvm_timeout if accel == "kvm" else timeout)
            except TimeoutError:
                guest.stop()
                if accel == "kvm":
                    accel_mod.record_kvm(cache, image.key, boots=False)
                    continue
                raise LabError(f"guest not READY after {timeout:.0f}s under {accel}") from None
            except BaseException:
                guest.stop()
                raise
            if accel == "kvm":
                accel_mod.record_kvm(cache, image.key, boots=True)
            return guest
        raise LabError("no accelerator could boot the guest")

    @classmethod
    def clone(
        cls,
        snapshot: LabSnapshot | Path,
        *,
        workload: str,
        workload_mib: int = 2,
        timeout: float = 60.0,
    ) -> LabGuest:
        """Resume a new guest from a template ``snapshot``, then start its workload.

        The clone gets its own RAM file (a sparse copy of the template's), QMP sockets and
        console; it runs the template's kernel and processes where they were, plus one
        ``avscan-work`` process (:attr:`workload_pid`) holding ``variant_tag(workload,
        "workload", 0, pid)`` and ``workload_mib`` MiB of text made from ``workload``.
        :attr:`boot_seconds` is the time to running again, without the workload. Raises
        :class:`LabError` (after removing every file the clone made) when the snapshot is
        missing, incomplete or does not load.
        """
        _check_variant("workload", workload)
        if isinstance(snapshot, LabSnapshot):
            snapshot.check()  # its files may have gone since it was saved
            snap = snapshot
        else:
            snap = LabSnapshot.load(snapshot)  # checks too
        if not 0 <= workload_mib <= snap.memory_mib // 4:
            raise InvalidArgument("workload_mib", f"{workload_mib}: expected 0..{snap.memory_mib // 4}")
        _check_host()
        guest = cls(
            snap.image, snap.memory_mib, snap.markers, snap.variant, load_modules=snap.load_modules, clonable=True
        )
        _live.add(guest)
        try:
            guest._resume_from(snap, time.monotonic() + timeout)
            guest.start_workload(workload, workload_mib, timeout)
        except BaseException:
            guest.stop()
            raise
        return guest

    def _resume_from(self, snap: LabSnapshot, deadline: float) -> None:
        began = time.monotonic()
        self.accel = snap.accel
        console = snap.console.read_text(errors="replace")
        self._console_prefix = console if console.endswith("\n") or not console else console + "\n"
        sparse_copy(snap.ram, self.ram_path)
        proc = self._spawn(self.command(snap.accel, incoming=True))
        self._qmp = QmpClient(self.qmp_path)
        try:
            self._qmp.connect(deadline)
            self.qmp("migrate-set-capabilities", IGNORE_SHARED)
            self.qmp("migrate-incoming", {"uri": f"exec:cat {shlex.quote(str(snap.vmstate))}"})
            wait_migration(lambda: self.qmp("query-migrate"), f"clone from {snap.directory}", deadline)
            self.resume()
        except (LabError, QmpError) as e:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
            if proc.poll() is not None:
                raise self._exited(f"clone from {snap.directory}") from e
            raise
        self.boot_seconds = time.monotonic() - began

    def save_template(self, directory: Path, *, timeout: float = 60.0, resume: bool = False) -> LabSnapshot:
        """Pause this guest and save it as a template snapshot in ``directory`` (see :mod:`scanner.lab.clone`).

        The guest must be clonable. It stays paused unless ``resume``. Saving again overwrites.
        """
        if not self.clonable:
            raise LabError("save_template: the guest was not started with clonable=True")
        snap = LabSnapshot(
            directory, self.image, self.memory_mib, self.markers, self.variant, self.load_modules, self.accel
        )
        directory.mkdir(parents=True, exist_ok=True)
        snap.manifest.unlink(missing_ok=True)  # incomplete until written again, last
        deadline = time.monotonic() + timeout
        if self.status() == "running":
            self.pause()
        self.qmp("migrate-set-capabilities", IGNORE_SHARED)
        receive_migration(
            lambda uri: self.qmp("migrate", {"uri": uri}),
            lambda: self.qmp("query-migrate"),
            self.workdir / "save.sock",
            snap.vmstate,
            f"save template to {directory}",
            deadline,
        )
        snap.ram.unlink(missing_ok=True)
        sparse_copy(self.ram_path, snap.ram)
        snap.console.write_text(self.console_text())
        snap.write_manifest()
        if resume:
            self.resume()
        return snap

    def start_workload(self, variant: str, mib: int = 2, timeout: float = 60.0) -> int:
        """Tell init (over ttyS1) to start ``avscan-work variant mib``; return its pid once it is up."""
        _check_variant("variant", variant)
        if not self.clonable:
            raise LabError("start_workload: the guest was not started with clonable=True")
        deadline = time.monotonic() + timeout
        seen = len(self.console_text())
        with connect_unix(self.command_path, deadline) as port:
            port.sendall(f"work {variant} {mib}\n".encode())
            while (pid := work_done(self.console_text()[seen:], variant)) is None:
                if self._proc is None or self._proc.poll() is not None:
                    raise self._exited(f"workload {variant}")
                if time.monotonic() > deadline:
                    raise LabError(f"workload {variant}: no AVSCAN-WORK-DONE after {timeout:.0f}s")
                time.sleep(0.05)
        self.workload_pids.append(pid)
        self._procs = None
        return pid

    def command(self, accel: str, incoming: bool = False) -> list[str]:
        """The QEMU command line for this guest (``incoming``: a clone waiting for its state)."""
        size = f"{self.memory_mib}M"
        append = f"console=ttyS0 quiet panic=-1 avscan.markers={self.markers} avscan.variant={self.variant}"
        if self.load_modules:
            append += " avscan.modules=1"
        if self.clonable:
            append += " avscan.clonable=1"
        if self.fill_mib:
            append += f" avscan.fill={self.fill_mib}"
        if self.lime:
            append += f" avscan.lime={LIME_DEVICE}"
        return [
            QEMU,
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-machine",
            "q35" if self.ram == "anonymous" else "q35,memory-backend=mem",
            "-accel",
            accel,
            *(["-cpu", "host"] if accel == "kvm" else []),
            "-m",
            size,
            "-smp",
            "1",
            *self._ram_args(size),
            "-kernel",
            str(self.image.kernel),
            "-initrd",
            str(self.initramfs),
            "-append",
            append,
            "-serial",
            f"file:{self.console_path}",
            *(["-serial", f"unix:{self.command_path},server=on,wait=off"] if self.clonable else []),
            "-qmp",
            f"unix:{self.qmp_path},server=on,wait=off",
            "-qmp",  # the appliance's own monitor: QEMU serves one client per QMP socket
            f"unix:{self.scanner_qmp_path},server=on,wait=off",
            *self._disk_args(),
            *(["-incoming", "defer"] if incoming else []),
        ]

    def _ram_args(self, size: str) -> list[str]:
        if self.ram == "anonymous":
            return []
        if self.ram == "memfd":
            return ["-object", f"memory-backend-memfd,id=mem,size={size},share=on"]
        if self.ram == "memfd-hugetlb":
            return ["-object", f"memory-backend-memfd,id=mem,size={size},share=on,hugetlb=on"]
        if self.ram == "hugetlbfs":
            return ["-object", f"memory-backend-file,id=mem,size={size},mem-path={self.hugetlbfs},share=off"]
        return ["-object", f"memory-backend-file,id=mem,size={size},mem-path={self.ram_path},share=on"]

    def _disk_args(self) -> list[str]:
        if self.disk is None:
            return []
        if self.disk_bus == "virtio":
            device = "virtio-blk-pci,drive=labdisk,id=labdisk-dev"
        elif self.disk_bus == "nvme":
            device = "nvme,drive=labdisk,id=labdisk-dev,serial=avscan-lab"
        else:
            device = "ide-hd,drive=labdisk,bus=ide.0,id=labdisk-dev"
        return ["-drive", f"file={self.disk},format=qcow2,if=none,id=labdisk", "-device", device]

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        with self.stderr_path.open("wb") as err:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
        return self._proc

    def _exited(self, during: str) -> LabError:
        assert self._proc is not None
        return LabError(
            f"qemu exited with {self._proc.returncode} during {during}: "
            f"{self._tail(self.stderr_path)} console: "
            f"{self._tail(self.console_path)}"
        )

    def _boot(self, accel: str, timeout: float) -> None:
        self.accel = accel
        began = time.monotonic()
        proc = self._spawn(self.command(accel))
        deadline = began + timeout
        while not is_ready(self.console_text()):
            if proc.poll() is not None:
                raise self._exited("boot")
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.05)
        self.boot_seconds = time.monotonic() - began
        self._qmp = QmpClient(self.qmp_path)
        self._qmp.connect()

    def stop(self) -> None:
        """Quit QEMU (QMP ``quit``, then SIGKILL) and remove every file the guest made."""
        _live.discard(self)
        if self._qmp is not None:
            with contextlib.suppress(LabError, QmpError):
                self._qmp.execute("quit", timeout=5)
            self._qmp.close()
            self._qmp = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        self.ram_path.unlink(missing_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LabGuest:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- QMP -------------------------------------------------------------------------------

    def qmp(self, command: str, arguments: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Run one QMP command and return its ``return`` value."""
        if self._qmp is None:
            raise LabError(f"qmp {command}: guest is not running")
        return self._qmp.execute(command, arguments, timeout)

    def events(self) -> list[dict[str, Any]]:
        """QMP events QEMU sent on the lab's monitor so far (oldest first), taken out of the queue."""
        if self._qmp is None:
            raise LabError("events: guest is not running")
        self.qmp("query-status")  # reads whatever QEMU sent before this reply
        taken, self._qmp.events[:] = list(self._qmp.events), []
        return taken

    def pause(self) -> None:
        self.qmp("stop")

    def resume(self) -> None:
        self.qmp("cont")

    def status(self) -> str:
        """QEMU's run state: ``running``, ``paused``..."""
        return str(self.qmp("query-status")["status"])

    def dump_elf(self, path: Path, timeout: float = 120.0, fmt: str = "elf") -> None:
        """Write a dump of guest memory (``dump-guest-memory``; ``fmt`` ``elf`` or QEMU's
        ``kdump-zlib``...) and wait until it is done."""
        assert self._qmp is not None
        arguments: dict[str, Any] = {"paging": False, "protocol": f"file:{path}", "detach": True}
        if fmt != "elf":
            arguments["format"] = fmt
        self.qmp("dump-guest-memory", arguments)
        deadline = time.monotonic() + timeout
        while (state := self.qmp("query-dump")).get("status") == "active":  # QEMU's own dump state
            if time.monotonic() > deadline:
                raise LabError(f"dump-guest-memory to {path} not done within {timeout:.0f} s")
            time.sleep(0.05)
        self._qmp.events = [e for e in self._qmp.events if e.get("event") != "DUMP_COMPLETED"]
        if state.get("status") != "completed":
            raise LabError(f"dump-guest-memory to {path} failed: {state}")

    def wait_migration(self, timeout: float = 120.0) -> None:
        """Wait until an outgoing ``migrate`` has completed (or raise when it failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.qmp("query-migrate").get("status", "")
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise LabError(f"migration {status}")
            time.sleep(0.05)  # polling QEMU's own migration state, not a fixed wait
        raise LabError(f"migration not completed within {timeout:.0f} s")

    def dump_raw(self, path: Path, timeout: float = 120.0) -> None:
        """Write guest-physical memory ``[0, memory_mib MiB)`` to ``path`` (``pmemsave``).

        For guests up to ``LOW_RAM_LIMIT`` all RAM sits below the PCI hole, so this is the whole
        of RAM (the legacy ROM window 0xA0000-0xFFFFF reads as the device, not the RAM file).
        """
        if self.memory_mib << 20 > LOW_RAM_LIMIT:
            raise LabError(f"dump_raw: a {self.memory_mib} MiB guest has RAM above 4 GiB; use dump_elf")
        self.qmp("pmemsave", {"val": 0, "size": self.memory_mib << 20, "filename": str(path)}, timeout)

    # -- what the guest said ---------------------------------------------------------------

    def console_text(self) -> str:
        """What the guest printed; a clone's starts with its template's console up to the save."""
        try:
            own = self.console_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            own = ""
        return self._console_prefix + own

    def processes(self) -> list[GuestProcess]:
        """The processes init listed before READY (pid, ppid, uid, comm; maps for workers).

        A clone's list ends with its workload processes, role ``workload``.
        """
        if self._procs is None:
            work = workload_pids(self.console_text())
            self._procs = [
                dataclasses.replace(p, role="workload") if p.pid in work else p
                for p in parse_processes(self.console_text())
            ]
        return self._procs

    def modules(self) -> list[GuestModule]:
        """The guest's ``/proc/modules`` as init printed it before READY (empty unless ``load_modules``)."""
        found = parse_modules(self.console_text())
        if found is None:
            raise LabError("the console has no AVSCAN-MODULES block")
        return found

    def lime_ranges(self) -> list[IomemRange]:
        """The guest's top-level ``System RAM`` resources, the ranges LiME dumped (a ``lime`` guest).

        Raises :class:`LabError` when the guest's LiME dump failed or never ran.
        """
        outcome = lime_outcome(self.console_text())
        if outcome is None or not outcome[0]:
            raise LabError(f"the guest made no LiME dump: {outcome[1] if outcome else 'no AVSCAN-LIME line'}")
        return [r for r in parse_iomem(self.console_text()) if r.name == "System RAM"]

    @property
    def marker_pids(self) -> list[int]:
        return sorted(p.pid for p in self.processes() if p.role == "marker")

    @property
    def workload_pid(self) -> int:
        """The pid of the one workload a clone started (:meth:`start_workload`)."""
        if len(self.workload_pids) != 1:
            raise LabError(f"expected one workload process, found {self.workload_pids}")
        return self.workload_pids[0]

    @property
    def clean_pid(self) -> int:
        pids = [p.pid for p in self.processes() if p.role == "clean"]
        if len(pids) != 1:
            raise LabError(f"expected one clean process in the console, found {pids}")
        return pids[0]

    @staticmethod
    def _tail(path: Path, size: int = 2000) -> str:
        try:
            return path.read_bytes()[-size:].decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


@atexit.register
def _stop_all() -> None:
    for guest in list(_live):
        guest.stop()
