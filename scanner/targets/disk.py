"""A guest disk read from outside: image (or live QEMU disk) -> volumes -> filesystems -> files.

Params (``TargetSpec("disk", {...})``):

- ``path``: the image file or block device (raw, qcow2, VMDK, VHDX, VHD, VDI); opened read-only;
  files it refers to only inside its directory (see :mod:`scanner.acquisition.disk.image`);
- ``format``: ``auto`` (default, sniffed from the first bytes), ``raw``, ``qcow2``, ``vmdk``, ``vhdx``,
  ``vhd``, ``vdi``;
- ``qmp`` + ``device``: a running QEMU guest's disk instead of ``path``: ``qmp`` is the guest's QMP
  socket (the appliance's own), ``device`` the block node name, drive id or qdev id. The disk is
  frozen with an external snapshot, scanned, then merged back (see
  :mod:`scanner.acquisition.disk.live`).

Each regular file is one :class:`DiskFileUnit`, scanned whole (``filesize``, ``pe``/``elf``
keep their meaning); it is read through the parsers into memory, so units are bounded by the
policy's ``max_file_size``. Unit names are ``<volume>:<path>`` (``p1:/etc/passwd``,
``lvm/vg0/root:/bin/ls``, ``disk:/x`` for a filesystem on the whole disk). Exclusion globs match
the path inside the guest. Anything not read (a volume with no filesystem we know, an unreadable
directory, a directory loop, a limit) is a :class:`Skipped` with its reason, so such a scan is
INCOMPLETE, never CLEAN. An image that cannot be opened at all raises ``SourceError`` (the engine
makes it an ERROR verdict). A swap area is one chunked unit ``<volume>:<swap>``.

After each filesystem's directory walk, the sweep by allocation (``Node.allocated``: ext inode
bitmaps, XFS inode btrees, the NTFS MFT, the FAT) offers every allocated regular file the walk did
not reach as a unit named by its key (``p2:<inode 4711>``); ``accounting()`` carries
``<volume>.files_allocated``, ``.files_reached`` and ``.files_orphaned``, or ``<volume>.sweep = 0``
(also in the details) where the filesystem cannot be swept.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from scanner.acquisition.disk.containers import Chain, open_container
from scanner.acquisition.disk.errors import DiskFormatError
from scanner.acquisition.disk.filesystems import HEAD_SIZE, Node, detect_filesystem, open_filesystem
from scanner.acquisition.disk.image import Confinement
from scanner.acquisition.disk.volumes import Volume, find_volumes
from scanner.acquisition.disk.walk import GuestFile, Walker, WalkLimits, WalkProblem, describe
from scanner.acquisition.preload import preload
from scanner.errors import InvalidArgument, SourceError, UnreadableError
from scanner.targets.base import Skipped, Target, Unit
from scanner.targets.files import FilePolicy
from scanner.targets.identity import digest, settled_identity
from scanner.verdicts import GapKind

FORMATS = ("auto", "raw", "qcow2", "vmdk", "vhdx", "vhd", "vdi")
SWAP_MAGICS = (b"SWAPSPACE2", b"SWAP-SPACE")
PAGE = 4096
ENCRYPTED = ((b"LUKS\xba\xbe", 0, "LUKS"), (b"-FVE-FS-", 3, "BitLocker"))


class SwapUnit(Unit):
    """A Linux swap area, scanned as raw bytes in windows like a memory range: swapped-out pages
    hold process memory. Named ``<volume>:<swap>``."""

    kind = "swap"
    chunkable = True

    def __init__(self, volume: Volume, lock: threading.Lock) -> None:
        self.volume = volume
        self.name = f"{volume.name}:<swap>"
        self.size = volume.size
        self.context = {"volume": volume.name, "swap": "linux swap area"}
        self._lock = lock

    @contextmanager
    def _window(self, offset: int, length: int) -> Iterator[memoryview]:
        try:
            with self._lock:
                self.volume.stream.seek(offset)
                data = self.volume.stream.read(length)
        except Exception as e:
            raise UnreadableError(self.name, offset, length, describe(e)) from e
        if len(data) != length:
            raise UnreadableError(self.name, offset, length, f"swap area ends after {len(data)} bytes")
        yield memoryview(data)

    def window(self, offset: int, length: int) -> AbstractContextManager[memoryview]:
        return self._window(offset, length)


def _is_swap_area(head: bytes, size: int) -> bool:
    """A Linux swap area (``mkswap``, 4 KiB pages): its signature at the end of the first page and a
    version-1 header whose last page lies inside the volume, within a page of its end."""
    if len(head) < PAGE or head[PAGE - 10 : PAGE] != b"SWAPSPACE2":
        return False
    version, last_page = struct.unpack_from("<II", head, 1024)
    return bool(version == 1 and 0 < (last_page + 1) * PAGE <= size < (last_page + 2) * PAGE)


class DiskFileUnit(Unit):
    """One regular file inside a guest filesystem, read whole through the parsers."""

    kind = "file"

    def __init__(
        self, volume: str, path: str, node: Node, size: int, lock: threading.Lock, image: bytes | None = None
    ) -> None:
        self.volume = volume
        self._image_identity = image
        self.path = path
        self.node = node
        self.size = size
        self.name = f"{volume}:{path}"
        self._lock = lock
        base = PurePosixPath(path)
        self.externals = {
            "filename": base.name,
            "filepath": str(base.parent),
            "extension": base.suffix.lstrip(".").lower(),
            "filetype": "",
            "owner": "",
        }

    def window(self, offset: int, length: int) -> AbstractContextManager[memoryview]:
        return self._window(offset, length)

    @contextmanager
    def _window(self, offset: int, length: int) -> Iterator[memoryview]:
        yield memoryview(self._read(offset, length))

    def _read(self, offset: int, length: int) -> bytes:
        """A copy of ``length`` bytes at ``offset``; the parsers share one handle, hence the lock."""
        try:
            with self._lock:
                stream = self.node.open()
                stream.seek(offset)
                data = stream.read(length)
        except Exception as e:  # parser or I/O failure on a damaged image: this range is a gap
            raise UnreadableError(self.name, offset, length, describe(e)) from e
        if len(data) != length:
            raise UnreadableError(self.name, offset, length, f"file data ends after {len(data)} bytes")
        return bytes(data)

    def identity(self) -> bytes | None:
        """From the image files' settled stamps (never from the guest's own inode times)."""
        if self._image_identity is None:
            return None
        return digest("disk-file", self._image_identity, self.volume, self.path)

    def finding_context(self) -> Mapping[str, str]:
        """Path inside the guest, volume, size, timestamps and the SHA-256 of the bytes scanned."""
        context = {"path": self.path, "volume": self.volume, "size": str(self.size)}
        try:
            context["sha256"] = hashlib.sha256(self._read(0, self.size)).hexdigest()
        except UnreadableError as e:
            context["sha256_error"] = e.reason
        try:
            for key, value in self.node.times().items():
                if value is not None:
                    context[key] = value.isoformat()
        except Exception as e:  # a damaged timestamp attribute must not lose the finding
            context["times_error"] = describe(e)
        return context


class DiskTarget(Target):
    kind = "disk"

    def __init__(
        self,
        path: str = "",
        fmt: str = "auto",
        policy: FilePolicy | None = None,
        qmp: str = "",
        device: str = "",
        libvirt: str = "",
        libvirt_uri: str = "",
    ) -> None:
        if fmt not in FORMATS:
            raise InvalidArgument("target.disk.format", f"{fmt!r}: expected one of {', '.join(FORMATS)}")
        if libvirt and (qmp or path or not device):
            raise InvalidArgument("target.disk.libvirt", "a libvirt domain's disk needs device and no path or qmp")
        if bool(qmp) != bool(device) and not libvirt:
            raise InvalidArgument("target.disk.device" if qmp else "target.disk.qmp", "qmp and device go together")
        if not path and not qmp and not libvirt:
            raise InvalidArgument("target.disk.path", "give an image path, or qmp and device for a live guest")
        if path and qmp:
            raise InvalidArgument("target.disk.path", "give either an image path or qmp and device, not both")
        self.path = path
        self.format = fmt
        self.policy = policy or FilePolicy()
        self.qmp = qmp
        self.device = device
        self.libvirt, self.libvirt_uri = libvirt, libvirt_uri
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self._details: dict[str, str] = {}
        self._accounting: dict[str, int] = {}
        self._live: Any = None
        self._opened: tuple[Any, str, Chain] | None = None
        self._identity: bytes | None = None  # the first identity() (asked by a cache), else None
        self._identity_taken = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any], policy: FilePolicy) -> DiskTarget:
        for key in ("path", "format", "qmp", "device", "libvirt", "libvirt_uri"):
            if key in params and not isinstance(params[key], str):
                raise InvalidArgument(f"target.disk.{key}", "must be a string")
        return cls(
            path=params.get("path") or "",
            fmt=params.get("format") or "auto",
            policy=policy,
            qmp=params.get("qmp") or "",
            device=params.get("device") or "",
            libvirt=params.get("libvirt") or "",
            libvirt_uri=params.get("libvirt_uri") or "",
        )

    def identity(self) -> bytes | None:
        """The image files' stamps (every file of the backing chain), when all are settled; None
        for a live guest's disk (its frozen base was written until the snapshot). The first
        answer, taken before ``plan()`` reads anything, is what the files' identities build on."""
        if self.qmp or self.libvirt:
            return None
        _, _, chain = self._open()
        now = settled_identity("disk", [self.path, self.format, self.policy], chain.files)
        if not self._identity_taken:
            self._identity, self._identity_taken = now, True
        return now

    def _open(self) -> tuple[Any, str, Chain]:
        if self._opened is None and self.libvirt:
            self._opened = self._export()
        if self._opened is None:
            image, fmt = self._image()
            confinement = Confinement.around(image, self.policy.disk_backing_dirs)
            chain = Chain(confinement, self.policy.disk_max_table_bytes)
            self._stack.callback(chain.close)
            try:
                disk, fmt = open_container(chain.open_top(image), fmt, chain)
            except DiskFormatError:
                raise
            except OSError as e:
                raise SourceError(str(image), e.strerror or str(e)) from e
            self._opened = (disk, fmt, chain)
        return self._opened

    def plan(self) -> Iterator[Unit | Skipped]:
        disk, fmt, chain = self._open()
        self._details.update({"disk.format": fmt, "disk.chain": " <- ".join(chain.files)})
        size = _size(disk)
        yield from _chain_gaps(chain, size)
        volumes, problems = find_volumes(disk, size)
        for problem in problems:
            yield Skipped(problem.name, problem.size, GapKind.UNREADABLE, problem.reason)
        self._details["disk.volumes"] = ", ".join(v.name for v in volumes)
        walker = Walker(WalkLimits(self.policy.max_depth, self.policy.max_files))
        for volume in volumes:
            yield from self._volume(volume, walker)

    def _export(self) -> tuple[Any, str, Chain]:
        """A libvirt domain's disk: a point-in-time export through libvirt's backup API, read in
        place over NBD (the guest-visible disk, so raw); no file of the guest is touched."""
        from scanner.acquisition.disk.libvirt_backup import LibvirtDiskExport

        self._live = LibvirtDiskExport(self.libvirt, self.device, self.libvirt_uri)
        self._stack.callback(self._live.release)
        preload()  # first imports of the parsers, one thread at a time, as Chain.open_top does
        disk = self._live.open()
        self._details.update(self._live.details())
        chain = Chain(Confinement(()), self.policy.disk_max_table_bytes, files=[self._live.uri_of_export])
        return disk, "raw", chain

    def _image(self) -> tuple[Path, str]:
        if not self.qmp:
            return Path(self.path), self.format
        from scanner.acquisition.disk.live import LiveDisk

        self._live = LiveDisk(Path(self.qmp), self.device)
        self._stack.callback(self._live.release)
        frozen = self._live.freeze()
        self._details.update(self._live.details())
        return frozen.path, frozen.format if self.format == "auto" else self.format

    def _volume(self, volume: Volume, walker: Walker) -> Iterator[Unit | Skipped]:
        try:
            name = detect_filesystem(volume.stream)
        except Exception as e:
            yield Skipped(volume.name, volume.size, GapKind.UNREADABLE, f"volume not readable: {describe(e)}")
            return
        if not name:
            yield self._unknown(volume)
            return
        try:
            root = open_filesystem(name, volume.stream)
        except Exception as e:
            detail = f"{name} filesystem does not open: {describe(e)}"
            yield Skipped(volume.name, volume.size, GapKind.UNREADABLE, detail)
            return
        if root.problem:
            yield Skipped(f"{volume.name}:<filesystem>", 0, GapKind.UNREADABLE, root.problem)
        for item in walker.walk(root, volume.name):
            if isinstance(item, WalkProblem):
                yield Skipped(f"{volume.name}:{item.path}", item.size, item.kind, item.reason)
            else:
                yield self._file(volume.name, item)
        yield from self._sweep(volume.name, name, root, walker)

    def _sweep(self, volume: str, fs: str, root: Node, walker: Walker) -> Iterator[Unit | Skipped]:
        """Every allocated regular file the walk did not reach, as a unit named by its key."""
        failure: Exception | None = None
        try:
            swept = root.allocated()
        except Exception as e:
            swept, failure = iter(()), e
        if swept is None:
            self._accounting[f"{volume}.sweep"] = 0
            self._details[f"{volume}.sweep"] = f"{fs}: no sweep by allocation; files no directory lists are not seen"
            return
        allocated: set[object] = set()
        reached = 0
        try:
            for node in swept:
                if node.key in allocated:
                    continue
                allocated.add(node.key)
                if (volume, node.key) in walker.reached:
                    reached += 1
                elif not walker.count():
                    failure = RuntimeError(f"more than {walker.limits.max_entries} entries; the rest not swept")
                    break
                elif node.kind == "damaged":
                    yield Skipped(f"{volume}:{node.name}", 0, GapKind.UNREADABLE, node.problem)
                else:
                    yield self._file(volume, GuestFile(node.name, node, node.size))
        except Exception as e:  # the allocation data itself is damaged: what it did not list is unknown
            failure = e
        if failure is not None:
            yield Skipped(f"{volume}:<allocation>", 0, GapKind.UNREADABLE, f"sweep by allocation: {describe(failure)}")
        orphaned = len(allocated) - reached
        self._accounting.update(
            {
                f"{volume}.sweep": 1 if failure is None else 0,
                f"{volume}.files_allocated": len(allocated),
                f"{volume}.files_reached": reached,
                f"{volume}.files_orphaned": orphaned,
            }
        )

    def _unknown(self, volume: Volume) -> Unit | Skipped:
        """A volume with no filesystem we read: a swap area is scanned as raw pages; the rest is a gap."""
        try:
            volume.stream.seek(0)
            head = volume.stream.read(min(HEAD_SIZE, volume.size))
        except Exception:
            head = b""
        if _is_swap_area(head, volume.size):
            return SwapUnit(volume, self._lock)
        detail = f"{volume.description}: no supported filesystem (ext, xfs, ntfs, fat)"
        for magic, offset, what in ENCRYPTED:
            if head[offset : offset + len(magic)] == magic:
                detail = f"{volume.description}: encrypted volume ({what}): not scanned"
        if any(m in head[4086:4096] for m in SWAP_MAGICS):
            detail += "; a swap signature without a valid swap header (not read as swap)"
        return Skipped(volume.name, volume.size, GapKind.SKIPPED_POLICY, detail)

    def _file(self, volume: str, item: GuestFile) -> Unit | Skipped:
        skipped = self.policy.skip(f"{volume}:{item.path}", item.path, item.size)
        if skipped is not None:
            return skipped
        return DiskFileUnit(volume, item.path, item.node, item.size, self._lock, self._identity)

    def finish(self) -> None:
        if self._live is not None:
            self._live.release()
            self._details.update(self._live.details())

    def details(self) -> Mapping[str, str]:
        return dict(self._details)

    def accounting(self) -> Mapping[str, int]:
        return dict(self._accounting)

    def close(self) -> None:
        self._stack.close()


def _chain_gaps(chain: Chain, size: int) -> Iterator[Skipped]:
    """A gap per file the image refers to that was not opened (outside, symlinked, missing...)."""
    for problem in chain.problems:
        yield Skipped("disk", size, GapKind.UNREADABLE, problem)


def _size(stream: Any) -> int:
    size = getattr(stream, "size", None)
    if isinstance(size, int):
        return size
    end = int(stream.seek(0, os.SEEK_END))
    stream.seek(0)
    return end
