"""Image files opened read-only, confined to the image's own directory, with truncation made loud.

Two ways in, one handle type (:class:`StrictFile`):

- :func:`open_image`: the image the user named. A symlink the user gave is resolved (what it points
  to is what they asked for); the result must be a regular file or a block device, never under
  ``/proc`` or ``/sys``. Its name stays the one given (in its real directory), so relative references
  are looked up beside the name the user gave, as QEMU does.
- :meth:`Confinement.open`: every file an image *refers to* (qcow2 backing and data files, VMDK
  parents and extents). Images are hostile, so such a name is only opened when it lies inside one
  of the confinement's roots (the top image's directory, plus ``FilePolicy.backing_dirs``), is
  reached without any symlink (each directory component below the root is opened with
  ``O_NOFOLLOW | O_DIRECTORY`` relative to its parent, the last one with ``O_NOFOLLOW``), and is a
  regular file. Anything else raises :class:`~scanner.acquisition.disk.errors.ReferenceRefused`
  naming the reference, never its target's size or contents.

Every open is ``O_RDONLY | O_NONBLOCK | O_CLOEXEC`` (a FIFO never blocks) and checked with
``fstat`` before the first read. A read of ``n > 0`` bytes that gets fewer, or that would end past
the file's end, raises :class:`TruncatedImage` naming the file and offset, before any buffer is
allocated (a table size read from a hostile header cannot make the scanner allocate more than the
file holds). Reads of "the rest" (``read()``) are not checked.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from scanner.acquisition.disk.errors import DiskFormatError, ReferenceRefused, TruncatedImage

OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
PSEUDO_ROOTS = (Path("/proc"), Path("/sys"))
"""Kernel pseudo-filesystems: never an image, never a root, never a chain file."""
DEVICES = Path("/dev")


class ReadOnlyStream(io.RawIOBase):
    """A read-only stream of ``size`` bytes with a position; subclasses read. ``where`` names it in errors."""

    size: int
    _pos: int

    def where(self) -> str:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}.get(whence)
        if base is None:
            raise ValueError(f"bad whence {whence}")
        if base + offset < 0:
            raise OSError(f"{self.where()}: negative seek to {base + offset}")
        self._pos = base + offset
        return self._pos


class StrictFile(ReadOnlyStream):
    """A read-only, seekable view of an open descriptor (file or block device) that refuses short reads."""

    def __init__(self, fd: int, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)  # deliberately no ``name``: dissect would open siblings by it
        self._fd = fd
        self._pos = 0
        self.size = os.lseek(self._fd, 0, os.SEEK_END)

    def where(self) -> str:
        return str(self.path)

    def fileno(self) -> int:
        return self._fd

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            data = os.pread(self._fd, max(0, self.size - self._pos), self._pos)
            self._pos += len(data)
            return data
        if size == 0:
            return b""
        data = os.pread(self._fd, size, self._pos) if self._pos + size <= self.size else b""
        if len(data) < size:
            raise TruncatedImage(
                f"{self.path}: read of {size} bytes at {self._pos:#x} ends past the end of the image "
                f"({self.size} bytes): truncated image or a table pointing past its end"
            )
        self._pos += size
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def open_image(path: Path) -> StrictFile:
    """The image the user named: symlinks resolved, a regular file or block device, not /proc or /sys."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as e:
        raise DiskFormatError(str(path), "no such image file or device") from e
    if _pseudo(real):
        raise DiskFormatError(str(path), f"{real} is in a kernel pseudo-filesystem, not an image")
    try:
        fd = os.open(real, OPEN_FLAGS | os.O_NOFOLLOW)
    except OSError as e:
        raise DiskFormatError(str(path), e.strerror or str(e)) from e
    kind = _kind(fd)
    if kind not in ("regular file", "block device"):
        os.close(fd)
        raise DiskFormatError(str(path), f"a {kind}, not an image file or block device: not opened")
    return StrictFile(fd, path.absolute().parent.resolve() / path.name)  # named where the user named it


@dataclass(frozen=True)
class Confinement:
    """The directories files named *by an image* may be opened from (real paths, no symlinks)."""

    roots: tuple[Path, ...]

    @classmethod
    def around(cls, image: Path, extra: Iterable[str] = ()) -> Confinement:
        """The directory ``image`` was named in (resolved once: the user chose it), plus ``extra``.
        A device directory is never a root by itself (a qcow2 on /dev/sdb must not reach /dev/shm)."""
        own = image.absolute().parent.resolve()
        roots = [] if own == DEVICES or own.is_relative_to(DEVICES) else [own]
        roots += [Path(d).resolve() for d in extra]
        return cls(tuple(r for r in dict.fromkeys(roots) if not _pseudo(r)))

    def locate(self, name: str, beside: Path) -> Path:
        """Where ``name`` (absolute, or relative to ``beside``, as QEMU resolves it) lies, lexically;
        raises ReferenceRefused when that is outside every root."""
        if not name or "\0" in name:
            raise ReferenceRefused(name, "empty or NUL in the name")
        candidate = Path(os.path.normpath(beside / name))
        if not any(candidate.is_relative_to(root) for root in self.roots):
            raise ReferenceRefused(name, "outside the image's directory")
        if _pseudo(candidate):
            raise ReferenceRefused(name, "in a kernel pseudo-filesystem")
        return candidate

    def open(self, name: str, beside: Path) -> StrictFile:
        """Open ``name`` read-only inside the roots, without following any symlink; a regular file only."""
        candidate = self.locate(name, beside)
        root = max((r for r in self.roots if candidate.is_relative_to(r)), key=lambda r: len(r.parts))
        fd = _open_beneath(root, candidate.relative_to(root).parts, name)
        kind = "file in a kernel pseudo-filesystem" if _pseudo_device(fd) else _kind(fd)
        if kind != "regular file":
            os.close(fd)
            raise ReferenceRefused(name, f"a {kind}, not a regular file")
        return StrictFile(fd, candidate)


def _open_beneath(root: Path, parts: tuple[str, ...], name: str) -> int:
    """``root/parts...`` opened one component at a time, each with ``O_NOFOLLOW`` (no symlink anywhere)."""
    if not parts:
        raise ReferenceRefused(name, "names a directory")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = (OPEN_FLAGS if last else os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) | os.O_NOFOLLOW
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError as e:
                raise ReferenceRefused(name, _why(e)) from e
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _why(error: OSError) -> str:
    if error.errno in (errno.ELOOP, errno.ENOTDIR):
        return "reached through a symlink or a non-directory (symlinks are never followed from an image)"
    if error.errno == errno.ENOENT:
        return "not found beside the image"
    return error.strerror or str(error)


def _kind(fd: int) -> str:
    mode = os.fstat(fd).st_mode
    for test, kind in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISDIR, "directory"),
    ):
        if test(mode):
            return kind
    return "special file"


def _pseudo_device(fd: int) -> bool:
    """Is ``fd`` on the same filesystem as this namespace's /proc or /sys (a bind mount elsewhere too)?"""
    dev = os.fstat(fd).st_dev
    devices = set()
    for root in PSEUDO_ROOTS:
        with contextlib.suppress(OSError):
            devices.add(os.stat(root).st_dev)
    return dev in devices


def _pseudo(path: Path) -> bool:
    return any(path == p or path.is_relative_to(p) for p in PSEUDO_ROOTS)
