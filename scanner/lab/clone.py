"""Template snapshots of lab guests, the way instant clones work: many guests, one memory image.

A guest started with ``LabGuest.start(clonable=True)`` has a second serial port (ttyS1) that its
init reads commands from after READY. :meth:`LabGuest.save_template` pauses it and writes a
:class:`LabSnapshot` directory; :meth:`LabGuest.clone` resumes a new guest from it and starts a
workload of its own, so clones share the template's kernel layout (KASLR included) and differ
from it only in the pages the workload and the kernel wrote since.

Contract: a snapshot directory holds

- ``ram``: the template's RAM file as it was while paused (a sparse copy: zero pages are holes);
- ``vmstate``: QEMU's migration stream of every device, without that RAM (the migration
  capability ``x-ignore-shared`` leaves out the shared ``memory-backend-file``), as QEMU sent
  it to a unix socket;
- ``console.log``: the template's console up to the save, so ``processes()`` works on clones;
- ``snapshot.json``: written last; a directory without it is not a snapshot.

A clone copies ``ram`` to its own ``/dev/shm`` file (sparse again), starts QEMU with the
template's device set and ``-incoming defer``, loads ``vmstate`` and continues.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.acquisition.qmp import QmpError
from scanner.lab.errors import LabError
from scanner.lab.image import LabImage

FORMAT = "avscan-lab-snapshot-1"
IGNORE_SHARED = {"capabilities": [{"capability": "x-ignore-shared", "state": True}]}
_WORK_DONE = re.compile(r"^AVSCAN-WORK-DONE variant=(\S+) pid=(\d+)\r?$", re.M)
_CMD_ERROR = re.compile(r"^AVSCAN-CMD-ERROR (.*?)\r?$", re.M)
_MANIFEST, _RAM, _VMSTATE, _CONSOLE = "snapshot.json", "ram", "vmstate", "console.log"


@dataclass(frozen=True)
class LabSnapshot:
    """A saved template: what a clone needs to resume (see the module docstring for the files)."""

    directory: Path
    image: LabImage
    memory_mib: int
    markers: int
    variant: str
    load_modules: bool
    accel: str

    @property
    def ram(self) -> Path:
        return self.directory / _RAM

    @property
    def manifest(self) -> Path:
        return self.directory / _MANIFEST

    @property
    def vmstate(self) -> Path:
        return self.directory / _VMSTATE

    @property
    def console(self) -> Path:
        return self.directory / _CONSOLE

    def write_manifest(self) -> None:
        """Write ``snapshot.json`` (atomically, last: it marks the directory complete)."""
        image = self.image
        doc = {
            "format": FORMAT,
            "image": {
                "directory": str(image.directory),
                "key": image.key,
                "kernel": str(image.kernel),
                "initramfs": str(image.initramfs),
                "kernel_package": image.kernel_package,
                "busybox_package": image.busybox_package,
            },
            "memory_mib": self.memory_mib,
            "markers": self.markers,
            "variant": self.variant,
            "load_modules": self.load_modules,
            "accel": self.accel,
        }
        tmp = self.directory / f".{_MANIFEST}.tmp"
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(self.manifest)

    @classmethod
    def load(cls, directory: Path) -> LabSnapshot:
        """Read and check a snapshot directory; :class:`LabError` names what is missing or wrong."""
        manifest = directory / _MANIFEST  # no instance yet: the manifest says what it is
        try:
            doc = json.loads(manifest.read_text())
        except FileNotFoundError:
            raise LabError(f"{directory}: not a lab snapshot (no {_MANIFEST})") from None
        except (OSError, ValueError) as e:
            raise LabError(f"{manifest}: unreadable snapshot manifest: {e}") from e
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise LabError(f"{manifest}: not a {FORMAT} manifest")
        try:
            img = doc["image"]
            snap = cls(
                directory=directory,
                image=LabImage(
                    directory=Path(img["directory"]),
                    key=str(img["key"]),
                    kernel=Path(img["kernel"]),
                    initramfs=Path(img["initramfs"]),
                    kernel_package=str(img["kernel_package"]),
                    busybox_package=str(img["busybox_package"]),
                ),
                memory_mib=int(doc["memory_mib"]),
                markers=int(doc["markers"]),
                variant=str(doc["variant"]),
                load_modules=bool(doc["load_modules"]),
                accel=str(doc["accel"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise LabError(f"{manifest}: incomplete snapshot manifest: {e!r}") from e
        snap.check()
        return snap

    def check(self) -> None:
        """Every file a clone reads exists (the boot image too: a clone loads the same ROMs)."""
        for path in (self.vmstate, self.console, self.image.kernel, self.image.initramfs):
            if not path.is_file():
                raise LabError(f"snapshot {self.directory}: {path} is missing")
        try:
            size = self.ram.stat().st_size
        except FileNotFoundError:
            raise LabError(f"snapshot {self.directory}: {self.ram} is missing") from None
        if size != self.memory_mib << 20:
            raise LabError(f"snapshot {self.directory}: {self.ram} has {size} bytes, expected {self.memory_mib} MiB")


def sparse_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst``, leaving holes where ``src`` has zero blocks (tmpfs keeps them)."""
    if shutil.which("cp") is None:
        raise LabError("cp not found (coreutils)")
    done = subprocess.run(["cp", "--sparse=always", "--", str(src), str(dst)], capture_output=True, check=False)
    if done.returncode != 0:
        raise LabError(f"copy {src} -> {dst} failed: {done.stderr.decode(errors='replace').strip()}")


def wait_migration(query: Callable[[], Any], what: str, deadline: float, until_ends: bool = True) -> None:
    """Poll ``query-migrate`` (through ``query``) until it completed; raise on failure or timeout.

    With ``until_ends=False``, look once: raise if it failed or the deadline passed, else return.
    """
    while True:
        try:
            info = query()
        except QmpError as e:
            raise LabError(f"{what}: {e.message}") from e
        status = info.get("status") if isinstance(info, dict) else None
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise LabError(f"{what}: migration {status}: {info.get('error-desc', 'no detail')}")
        if time.monotonic() > deadline:
            raise LabError(f"{what}: migration still {status} at the deadline")
        if not until_ends:
            return
        time.sleep(0.02)


def receive_migration(
    start: Callable[[str], object], query: Callable[[], Any], listen: Path, out: Path, what: str, deadline: float
) -> None:
    """Have QEMU migrate to a unix socket at ``listen`` (``start(uri)``), copy the stream to ``out``.

    Returns once the stream ended and ``query-migrate`` says completed. (Not ``exec:cat > file``:
    QEMU sends SIGTERM to an exec child that has not exited when the stream closes, which can
    cut the file short.)
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(listen))
        listener.listen(1)
        listener.settimeout(0.1)
        start(f"unix:{listen}")
        while True:
            try:
                conn, _ = listener.accept()
                break
            except TimeoutError:
                wait_migration(query, what, deadline, until_ends=False)
    listen.unlink(missing_ok=True)
    with conn, out.open("wb") as file:
        conn.settimeout(max(deadline - time.monotonic(), 0.1))
        try:
            while chunk := conn.recv(1 << 20):
                file.write(chunk)
        except OSError as e:
            raise LabError(f"{what}: reading the migration stream: {e}") from e
    wait_migration(query, what, deadline)


def connect_unix(path: Path, deadline: float) -> socket.socket:
    """Connect to a unix socket QEMU serves, retrying until it exists or ``deadline``."""
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            if time.monotonic() > deadline:
                raise LabError(f"connect {path}: {e}") from e
            time.sleep(0.02)


def work_done(text: str, variant: str) -> int | None:
    """The workload pid from ``AVSCAN-WORK-DONE variant=<variant> pid=<pid>``, if printed.

    Raises :class:`LabError` when init refused the command (``AVSCAN-CMD-ERROR``).
    """
    for done in _WORK_DONE.finditer(text):
        if done[1] == variant:
            return int(done[2])
    if refused := _CMD_ERROR.search(text):
        raise LabError(f"guest refused the command: {refused[1]}")
    return None


def workload_pids(text: str) -> set[int]:
    """Every workload pid a console reports (a clone of a clone inherits its template's)."""
    return {int(m[2]) for m in _WORK_DONE.finditer(text)}
