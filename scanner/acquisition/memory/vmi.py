"""Live guest RAM through LibVMI: FILE mode on a QEMU guest's file-backed RAM, KVM and Xen by config.

FILE mode reads the file QEMU maps as guest RAM (``memory-backend-file ... share=on``): stock
QEMU/KVM, no patches, no agent. LibVMI opens and checks it; windows are then mapped straight from
the file (zero-copy, parallel, holes untouched) rather than copied through ``read_pa``. LibVMI's
KVM driver needs a KVMi-enabled host and its socket; Xen needs a dom0. Where a driver cannot run
here the source raises :class:`Unavailable` saying why, before LibVMI is touched (the bundled
libvmi.so crashes on some failed inits, so every precondition is checked in Python first).

A guest can stop while it is scanned: each window checks before and after it is read that the RAM
file is still linked and as large as at open, so the rest of the scan becomes unreadable gaps,
never stale clean data.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from scanner.acquisition.hostfile import open_host_file
from scanner.acquisition.mapped import file_holes, file_window, holes_within, pread_gather
from scanner.acquisition.memory.base import MemorySource, PhysRange
from scanner.acquisition.mounts import on_hugetlbfs
from scanner.errors import InvalidArgument, SourceError, Unavailable, UnreadableError

DRIVERS = ("file", "kvm", "xen")


def _libvmi() -> Any:
    try:
        import libvmi
    except ImportError as e:  # pragma: no cover - the wheel is a dependency
        raise Unavailable("libvmi: unavailable: install the libvmi package") from e
    return libvmi


class LibvmiMemory(MemorySource):
    """Guest physical memory read through LibVMI."""

    format = "libvmi"

    def __init__(
        self,
        target: str,
        driver: str = "file",
        kvmi_socket: str = "",
        probe: Callable[[], str] | None = None,
    ) -> None:
        """``probe`` returns why the guest is gone ("" while it runs); checked before each read."""
        super().__init__(target)
        self._probe = probe
        if driver not in DRIVERS:
            raise InvalidArgument("target.guest.driver", f"unknown driver {driver!r} (known: {', '.join(DRIVERS)})")
        self.driver = driver
        self._lock = threading.Lock()  # one LibVMI handle is not safe for concurrent reads
        self._fd = -1
        self._mappable = False
        self._holes: list[tuple[int, int]] | None = None
        self._holes_lock = threading.Lock()
        if driver == "file":
            self._open_file(target)
        else:
            self._vmi = _open_hypervisor(target, driver, kvmi_socket)
            self._size = int(self._vmi.get_memsize())

    def _open_file(self, path: str) -> None:
        opened = open_host_file(path, "guest RAM file", follow=True)
        self._fd, st = opened.fd, opened.st
        if st.st_size == 0:
            os.close(self._fd)
            raise SourceError(path, "not a non-empty regular file (expected QEMU's memory-backend-file)")
        self._size = st.st_size
        # hugetlbfs maps only at huge-page offsets: such RAM is read through LibVMI (a copy)
        self._mappable = not on_hugetlbfs(self._fd)
        libvmi = _libvmi()
        try:
            self._vmi = libvmi.Libvmi(path, libvmi.INIT_DOMAINNAME, mode=libvmi.VMIMode.FILE, partial=True)
        except Exception as e:
            os.close(self._fd)
            raise SourceError(path, f"libvmi file mode: {e}") from e

    def _ranges(self) -> Sequence[PhysRange]:
        return [PhysRange(0, self._size)]

    def _window(self, address: int, length: int) -> AbstractContextManager[memoryview]:
        if self._fd >= 0 and self._mappable:
            return self._mapped(address, length)
        return self._read(address, length)

    @contextmanager
    def _mapped(self, address: int, length: int) -> Iterator[memoryview]:
        """FILE mode: the RAM file mapped in place (no copy, no lock, every thread at once) with
        its hole pages read as the zero page, never allocated in the guest's RAM file (LibVMI's
        reads go through a plain mapping of the file, which allocates every hole page they touch)."""
        self._check_alive(address, length)
        with file_window(self._fd, address, length, self.name, holes=True, known=self._file_holes()) as view:
            yield view
        self._check_alive(address, length)  # the guest may have gone while we scanned: a gap, not data

    @contextmanager
    def _read(self, address: int, length: int) -> Iterator[memoryview]:
        self._check_alive(address, length)
        with self._lock:
            try:
                data, count = self._vmi.read_pa(address, length, padding=True)
            except Exception as e:
                raise UnreadableError(self.name, address, length, f"libvmi read failed: {e}") from e
        if count < length:
            raise UnreadableError(self.name, address + count, length - count, "libvmi read short")
        self._check_alive(address, length)  # the guest may have gone while we read
        with memoryview(data) as view:
            yield view

    def gather(self, physicals: bytes, lengths: bytes, dst: bytearray) -> bool:
        """FILE mode: the runs read straight from the RAM file, with the alive check before and after."""
        if self._fd < 0:
            return False
        first = int.from_bytes(physicals[:8], "little")
        self._check_alive(first, len(dst))
        pread_gather(self._fd, self.name, physicals, lengths, dst)
        self._check_alive(first, len(dst))
        return True

    def holes(self, address: int, length: int) -> Sequence[tuple[int, int]]:
        """Holes of the RAM file (FILE mode): memory the guest never wrote, skipped unread."""
        return holes_within(self._file_holes(), address, address + length) if self._fd >= 0 else ()

    def _file_holes(self) -> list[tuple[int, int]]:
        """The RAM file's holes, asked for once per scan (at its first window, after any pause):
        ``SEEK_HOLE`` per window made a scan of populated tmpfs RAM quadratic in its size. A hole
        the running guest fills later reads as zeros, as if that page had been read earlier."""
        with self._holes_lock:
            if self._holes is None:
                self._holes = file_holes(self._fd, 0, self._size, limit=1 << 20)
            return self._holes

    def _check_alive(self, address: int, length: int) -> None:
        gone = self._probe() if self._probe else ""
        if gone:
            raise UnreadableError(self.name, address, length, gone)
        if self._fd < 0:
            return
        st = os.fstat(self._fd)
        if st.st_nlink == 0:
            raise UnreadableError(self.name, address, length, "guest RAM file was removed (guest stopped)")
        if st.st_size < self._size:
            raise UnreadableError(self.name, address, length, "guest RAM file shrank (guest stopped)")

    def close(self) -> None:
        vmi = getattr(self, "_vmi", None)
        if vmi is not None:
            vmi.destroy()
            self._vmi = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _open_hypervisor(name: str, driver: str, kvmi_socket: str) -> Any:
    if driver == "xen" and not Path("/dev/xen/privcmd").exists():
        raise Unavailable("libvmi xen driver: unavailable: this host is not a Xen dom0 (no /dev/xen/privcmd)")
    if driver == "kvm":
        if not kvmi_socket:
            raise Unavailable("libvmi kvm driver: unavailable: needs a KVMi-enabled QEMU and its socket (kvmi_socket)")
        if not Path(kvmi_socket).is_socket():
            raise Unavailable(f"libvmi kvm driver: unavailable: {kvmi_socket} is not a KVMi socket")
    libvmi = _libvmi()
    mode = libvmi.VMIMode.XEN if driver == "xen" else libvmi.VMIMode.KVM
    init_data = {libvmi.VMIInitData.KVMI_SOCKET: kvmi_socket} if driver == "kvm" else None
    try:
        return libvmi.Libvmi(name, libvmi.INIT_DOMAINNAME, init_data=init_data, mode=mode, partial=True)
    except Exception as e:
        raise Unavailable(f"libvmi {driver} driver: {e}") from e
