"""Guest RAM read straight from the QEMU process: any stock QEMU/KVM guest, no reconfiguration.

QEMU keeps guest RAM in its own address space (anonymous memory for plain ``-m``, a memfd, a
hugetlbfs or regular file for ``memory-backend-*``). Given the guest's RAM layout
(:mod:`scanner.acquisition.ramlayout`: guest-physical ranges and their host addresses) this
source reads guest-physical memory at those host addresses:

- **private (anonymous) RAM** through ``process_vm_readv`` (``pread`` on ``/proc/PID/mem`` where
  that fails) into per-thread buffers that are reused; ``/proc/PID/pagemap`` tells which pages
  were never touched (neither present nor swapped): those are zero and are filled in, never
  read, so the scan faults nothing in;
- **shared RAM** (memfd, hugetlbfs, a file) through the file itself (``/proc/PID/map_files``):
  zero-copy windows where the filesystem maps at page granularity, a ``pread`` copy on hugetlbfs,
  and the file's holes asked for once (never per window: ``SEEK_HOLE`` on a populated tmpfs file
  costs time in proportion to the rest of the file).

Contract: every range of the layout must lie inside mappings of the process as
``/proc/PID/maps`` lists them, or the source refuses to open. Opening needs ptrace-level access
to QEMU (``CAP_SYS_PTRACE``, or the same user and Yama allowing it); without it
:class:`~scanner.errors.PermissionDenied` says so in one line. A read after QEMU exited raises
:class:`~scanner.errors.UnreadableError` ("guest stopped"), never returns zeros.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import os
import select
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from scanner.acquisition.mapped import file_holes, file_window, holes_within
from scanner.acquisition.memory.base import MemorySource, PhysRange
from scanner.acquisition.mounts import on_hugetlbfs
from scanner.acquisition.ramlayout import RamLayout, RamRange
from scanner.errors import PermissionDenied, SourceError, UnreadableError

PAGE = os.sysconf("SC_PAGE_SIZE")
_PRESENT_OR_SWAPPED = bytes(0 if b & 0xC0 == 0 else 1 for b in range(256))  # pagemap bits 63, 62
_ZEROS = bytes(16 << 20)
MAX_MAPS_LINES = 1_000_000


@dataclass(frozen=True)
class Mapping:
    """One line of ``/proc/PID/maps``."""

    start: int
    end: int
    shared: bool
    offset: int
    path: str
    perms: str = ""  # as maps spells them, e.g. "rw-p", "---p" (a guard)


class ProcessWatch:
    """Tells, without a round trip to anything, whether a process has exited (a pidfd)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self._fd = os.pidfd_open(pid)
        except OSError as e:
            raise SourceError(f"pid {pid}", f"QEMU process not found: {e.strerror}") from e

    def exited(self) -> bool:
        if self._fd < 0:
            return True
        ready, _, _ = select.select([self._fd], [], [], 0)
        return bool(ready)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_maps(pid: int) -> list[Mapping]:
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError as e:
        raise SourceError(f"pid {pid}", f"cannot read the QEMU process's memory map: {e.strerror}") from e
    out: list[Mapping] = []
    for line in text.splitlines()[:MAX_MAPS_LINES]:
        fields = line.split(maxsplit=5)
        if len(fields) < 5:
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        path = fields[5] if len(fields) > 5 else ""
        out.append(Mapping(start, end, fields[1][3] == "s", int(fields[2], 16), path, fields[1]))
    return out


def mappings_of(maps: Sequence[Mapping], host: int, length: int, where: str) -> list[Mapping]:
    """The consecutive mappings covering ``[host, host + length)``; SourceError if any byte is unmapped."""
    starts = [m.start for m in maps]
    i = bisect.bisect_right(starts, host) - 1
    out: list[Mapping] = []
    position = host
    while position < host + length:
        if i < 0 or i >= len(maps) or not maps[i].start <= position < maps[i].end:
            raise SourceError(where, f"host address {position:#x} is not mapped in QEMU's process")
        out.append(maps[i])
        position = maps[i].end
        i += 1
    return out


class _Buffers(threading.local):
    """Per-thread reusable read buffers (a stack, so nested windows on one thread stay apart)."""

    def __init__(self) -> None:
        self.free: list[bytearray] = []

    def take(self, length: int) -> bytearray:
        for i, buf in enumerate(self.free):
            if len(buf) >= length:
                return self.free.pop(i)
        return bytearray(max(length, 1 << 20))

    def give(self, buf: bytearray) -> None:
        self.free.append(buf)


class QemuProcessMemory(MemorySource):
    """Guest physical memory read from the address space of the guest's QEMU process."""

    format = "qemu-process"

    def __init__(
        self,
        layout: RamLayout,
        name: str = "",
        probe: Callable[[], str] | None = None,
        through_process: bool = False,
    ) -> None:
        """``probe`` returns why the guest is gone ("" while it runs); it must be cheap.
        ``through_process``: read shared RAM through ``/proc/PID/mem`` too (its file still tells
        the holes), not through its file; except on hugetlbfs, whose holes no call tells and
        where a read through the process would allocate every huge page it touches: there the
        file is read (``pread`` on hugetlbfs reads a hole as zeros without allocating)."""
        super().__init__(name or f"qemu-pid-{layout.pid}")
        self.through_process = through_process
        self.layout = layout
        self.pid = layout.pid
        self._probe = probe
        self._buffers = _Buffers()
        self._holes: dict[int, list[tuple[int, int]]] = {}
        self._holes_lock = threading.Lock()
        self._fds: list[int] = []
        self.watch = ProcessWatch(self.pid)
        try:
            self._mem = self._open(f"/proc/{self.pid}/mem")
            self._pagemap = self._open(f"/proc/{self.pid}/pagemap")
            maps = read_maps(self.pid)
            self._ranges_by_start = list(layout.ranges)
            self._backings = [self._backing(r, maps) for r in layout.ranges]
        except BaseException:
            self.close()
            raise

    def _open(self, path: str) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError as e:
            raise PermissionDenied(
                f"{path}: ptrace access to QEMU (pid {self.pid}) not permitted: the appliance needs "
                f"CAP_SYS_PTRACE{_yama_hint()}"
            ) from e
        except FileNotFoundError as e:
            raise SourceError(path, "QEMU process is gone") from e
        self._fds.append(fd)
        return fd

    def _backing(self, r: RamRange, maps: Sequence[Mapping]) -> _FileBacking | None:
        """How range ``r`` is read. None: private memory read from the process, pagemap telling
        untouched pages (zero). A file backing: shared RAM read through its file, or fd -1 when
        every page must be read through the process (a shared file that cannot be opened, or a
        private mapping of a file holding data: an untouched page there is the file's, not zero,
        as for ``memory-backend-file,share=off`` over a RAM template)."""
        covering = mappings_of(maps, r.host, r.length, self.name)
        first = covering[0]
        offset = first.offset + (r.host - first.start)
        if not first.path or first.path.startswith("[") or any(m.path != first.path for m in covering):
            return None if not any(m.shared for m in covering) else _FileBacking(-1, offset, False)
        fd = self._open_mapped_file(first)
        if not all(m.shared for m in covering):
            if fd >= 0 and _no_data(fd, offset, r.length):
                return None
            return _FileBacking(-1, offset, False)
        # fd -1, no file: read through the process, every page (pagemap cannot tell a shared
        # page that is swapped out from one never written)
        return _FileBacking(fd, offset, fd >= 0 and not on_hugetlbfs(fd))

    def _open_mapped_file(self, m: Mapping) -> int:
        """The file of mapping ``m`` opened read-only (kept until close), or -1."""
        candidates = [f"/proc/{self.pid}/map_files/{m.start:x}-{m.end:x}"]  # needs CAP_SYS_ADMIN
        if m.path.startswith("/") and not m.path.endswith(" (deleted)"):
            candidates.append(m.path)
        for path in candidates:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            self._fds.append(fd)
            return fd
        return -1

    def _ranges(self) -> Sequence[PhysRange]:
        return [PhysRange(r.physical, r.length) for r in self.layout.ranges]

    def _locate(self, address: int) -> int:
        return bisect.bisect_right([r.physical for r in self._ranges_by_start], address) - 1

    def _window(self, address: int, length: int) -> AbstractContextManager[memoryview]:
        i = self._locate(address)
        r, backing = self._ranges_by_start[i], self._backings[i]
        host = r.host + address - r.physical
        if backing is None:
            return self._process_window(host, address, length, self._absent)
        if backing.fd < 0:
            return self._process_window(host, address, length, lambda h, n: [])
        if self.through_process and backing.mappable:
            delta = r.host - backing.offset  # file offset -> host address
            holes = [(a + delta, b + delta) for a, b in self._file_holes(i, backing)]
            return self._process_window(host, address, length, lambda h, n: holes_within(holes, h, h + n))
        return self._file_window(i, backing, address - r.physical, address, length)

    def read_into(self, address: int, length: int, dst: memoryview) -> list[tuple[int, int]]:
        """Copy ``[address, address + length)`` (inside one range) into ``dst`` in one pass,
        writing nothing where pages are untouched or file holes; those runs are returned
        (physical addresses), so a copy into a sparse file stays sparse."""
        i = self._locate(address)
        if i < 0 or address + length > self._ranges_by_start[i].physical + self._ranges_by_start[i].length:
            raise UnreadableError(self.name, address, length, "outside the address map")
        r, backing = self._ranges_by_start[i], self._backings[i]
        self._check_alive(address, length)
        host = r.host + address - r.physical
        if backing is None:
            absent, fd, base = self._absent(host, length), self._mem, host
        elif backing.fd < 0:
            absent, fd, base = [], self._mem, host
        else:
            start = backing.offset + address - r.physical
            absent, fd, base = holes_within(self._file_holes(i, backing), start, start + length), backing.fd, start
        skipped: list[tuple[int, int]] = []
        position = base
        for a, b in [*absent, (base + length, base + length)]:
            if a > position:
                self._read_run(fd, dst, position - base, a - position, position, address)
            if b > a:
                skipped.append((address + a - base, address + b - base))
            position = max(position, b)
        return skipped

    def _read_run(self, fd: int, dst: memoryview, at: int, length: int, offset: int, address: int) -> None:
        if fd == self._mem:
            self._read_process(dst, at, length, offset, address)
        else:
            _pread(fd, dst, at, length, offset, self.name)

    def _check_alive(self, address: int, length: int) -> None:
        gone = self._probe() if self._probe else ""
        if not gone and self.watch.exited():
            gone = f"guest stopped: QEMU process {self.pid} exited"
        if gone:
            raise UnreadableError(self.name, address, length, gone)

    @contextmanager
    def _file_window(
        self, i: int, backing: _FileBacking, offset: int, address: int, length: int
    ) -> Iterator[memoryview]:
        self._check_alive(address, length)
        holes = self._file_holes(i, backing)
        start = backing.offset + offset
        if backing.mappable:
            with file_window(backing.fd, start, length, self.name, holes=True, known=holes) as view:
                yield view
        else:
            with self._buffer(length) as view:
                _fill(view, start, holes, lambda a, b: _pread(backing.fd, view, a - start, b - a, a, self.name))
                yield view
        self._check_alive(address, length)  # QEMU may have exited while we scanned: a gap, not data

    def _file_holes(self, i: int, backing: _FileBacking) -> list[tuple[int, int]]:
        """The file's holes over range ``i``, asked for once (file offsets)."""
        with self._holes_lock:
            if i not in self._holes:
                r = self._ranges_by_start[i]
                self._holes[i] = file_holes(backing.fd, backing.offset, r.length, limit=1 << 20)
            return self._holes[i]

    @contextmanager
    def _process_window(
        self, host: int, address: int, length: int, untouched: Callable[[int, int], list[tuple[int, int]]]
    ) -> Iterator[memoryview]:
        self._check_alive(address, length)
        absent = untouched(host, length)
        with self._buffer(length) as view:
            _fill(view, host, absent, lambda a, b: self._read_process(view, a - host, b - a, a, address))
            yield view

    def _read_process(self, view: memoryview, at: int, length: int, host: int, address: int) -> None:
        try:
            if not _vm_read(self.pid, view, at, length, host):
                _pread(self._mem, view, at, length, host, self.name)
        except UnreadableError as e:
            reason = f"guest stopped: QEMU process {self.pid} exited" if self.watch.exited() else e.reason
            raise UnreadableError(self.name, address + at, length, reason) from e

    @contextmanager
    def _buffer(self, length: int) -> Iterator[memoryview]:
        buf = self._buffers.take(length)
        view = memoryview(buf)[:length]
        try:
            yield view
        finally:
            view.release()
            self._buffers.give(buf)

    def _absent(self, host: int, length: int) -> list[tuple[int, int]]:
        """Host address runs inside ``[host, host + length)`` whose pages were never touched."""
        first = host - host % PAGE
        flags = self._page_flags(first, host + length)
        out: list[tuple[int, int]] = []
        i, n = 0, len(flags)
        while i < n:
            j = flags.find(1, i)
            j = n if j < 0 else j
            if j > i:
                out.append((max(host, first + i * PAGE), min(host + length, first + j * PAGE)))
            if j >= n:
                break
            k = flags.find(0, j)
            i = n if k < 0 else k
        return out

    def _page_flags(self, start: int, end: int) -> bytes:
        """One byte per page of ``[start, end)``: 1 present or swapped, 0 never touched."""
        pages = -(-(end - start) // PAGE)
        try:
            raw = os.pread(self._pagemap, pages * 8, (start // PAGE) * 8)
        except OSError as e:
            raise UnreadableError(self.name, start, end - start, f"pagemap unreadable: {e.strerror}") from e
        if len(raw) < pages * 8:
            raise UnreadableError(self.name, start, end - start, f"guest stopped: QEMU process {self.pid} exited")
        return raw[7::8].translate(_PRESENT_OR_SWAPPED)

    def holes(self, address: int, length: int) -> Sequence[tuple[int, int]]:
        """Never-touched memory (pagemap) or file holes, in physical addresses, whole MiB blocks
        for process-read RAM (a finer hole is still skipped when its window is read). Never
        raises: what cannot be told is simply not a hole."""
        out: list[tuple[int, int]] = []
        for i, r in enumerate(self._ranges_by_start):
            lo, hi = max(address, r.physical), min(address + length, r.physical + r.length)
            if lo >= hi:
                continue
            backing = self._backings[i]
            if backing is not None and backing.fd < 0:
                continue
            if backing is not None:
                base = backing.offset - r.physical
                out += [(max(a - base, lo), min(b - base, hi)) for a, b in self._file_holes(i, backing)]
                continue
            delta = r.host - r.physical
            try:
                out += [(a - delta, b - delta) for a, b in self._absent_blocks(lo + delta, hi - lo)]
            except UnreadableError:
                continue  # QEMU is gone: its windows say so when they are read

        return [(a, b) for a, b in out if a < b]

    def _absent_blocks(self, host: int, length: int, block: int = 1 << 20) -> list[tuple[int, int]]:
        flags = self._page_flags(host - host % PAGE, host + length)
        per = block // PAGE
        out: list[tuple[int, int]] = []
        for j in range(0, len(flags), per):
            if flags.find(1, j, j + per) < 0:
                a, b = host - host % PAGE + j * PAGE, host - host % PAGE + (j + per) * PAGE
                a, b = max(a, host), min(b, host + length)
                if out and out[-1][1] == a:
                    out[-1] = (out[-1][0], b)
                else:
                    out.append((a, b))
        return out

    def close(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        self.watch.close()


@dataclass(frozen=True)
class _FileBacking:
    fd: int  # -1: shared memory whose file cannot be opened
    offset: int  # file offset of the range's first byte
    mappable: bool


def _no_data(fd: int, offset: int, length: int) -> bool:
    """The file holds no data in ``[offset, offset + length)``: no block allocated at all, or
    holes over the whole range. False where that cannot be told."""
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    if st.st_blocks == 0:
        return True
    holes = file_holes(fd, offset, length, limit=1 << 20)
    return sum(b - a for a, b in holes) == length


def _fill(view: memoryview, base: int, gaps: Sequence[tuple[int, int]], read: Callable[[int, int], None]) -> None:
    """Fill ``view`` (bytes ``base..``): zeros over ``gaps``, ``read(start, end)`` for the rest."""
    position, end = base, base + len(view)
    for first, last in sorted(gaps):
        a, b = max(first, base), min(last, end)
        if a >= b:
            continue
        if a > position:
            read(position, a)
        _zero(view, a - base, b - a)
        position = max(position, b)
    if position < end:
        read(position, end)


def _zero(view: memoryview, at: int, length: int) -> None:
    while length > 0:
        n = min(length, len(_ZEROS))
        view[at : at + n] = _ZEROS[:n]
        at, length = at + n, length - n


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_LIBC = ctypes.CDLL(None, use_errno=True)
_VM_READV = getattr(_LIBC, "process_vm_readv", None)


def _vm_read(pid: int, view: memoryview, at: int, length: int, host: int) -> bool:
    """``process_vm_readv`` straight into ``view[at:at + length]`` (one copy, fewer than a
    ``pread`` of ``/proc/PID/mem``); False where it cannot (then the caller preads)."""
    if _VM_READV is None or length <= 0:
        return False
    target = (ctypes.c_char * length).from_buffer(view[at : at + length])
    local = _Iovec(ctypes.addressof(target), length)
    remote = _Iovec(host, length)
    try:
        done = int(_VM_READV(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
    finally:
        del target
    return done == length


def _pread(fd: int, view: memoryview, at: int, length: int, offset: int, where: str) -> None:
    done = 0
    while done < length:
        try:
            n = os.preadv(fd, [view[at + done : at + length]], offset + done)
        except OSError as e:
            raise UnreadableError(where, offset + done, length - done, f"read failed: {e.strerror}") from e
        if n <= 0:
            raise UnreadableError(where, offset + done, length - done, "short read")
        done += n


def _yama_hint() -> str:
    try:
        scope = Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip()
    except OSError:
        return ""
    return f" (Yama ptrace_scope is {scope}; 3 forbids it until reboot)" if scope != "0" else ""

