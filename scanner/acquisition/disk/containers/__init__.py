"""Disk containers: an image file (and the files it refers to) -> the disk the guest sees.

One module per format, each with ``open_disk(image, chain) -> BinaryIO`` taking the image already
opened; ``FORMATS`` is the registry. :func:`sniff_format` detects the format from the first bytes.

Every file a container refers to (backing file, VMDK parent or extent, qcow2 data file) is opened
through :meth:`Chain.open_ref`, confined to the top image's directory and the configured backing
directories (see :mod:`scanner.acquisition.disk.image`). A reference that is refused or missing is
not an error of the whole disk: :meth:`Chain.absent` records it in ``Chain.problems`` (each becomes
a gap naming it) and stands in a stream whose every read fails, so what lives only in that file is
a gap too, never zeros. Nesting is bounded (:data:`MAX_CHAIN`), so is the number of files
(:data:`MAX_FILES`), and a file met twice (by device and inode) is a loop: an error, not a recursion.
"""

from __future__ import annotations

import importlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from scanner.acquisition.disk.errors import DiskFormatError, MissingData, ReferenceRefused, TruncatedImage
from scanner.acquisition.disk.image import Confinement, StrictFile, open_image
from scanner.acquisition.preload import preload

MAX_CHAIN = 16
"""Deepest nesting of containers (an overlay over a backing file over ...): deeper is an error."""
MAX_FILES = 1024
"""Most files one disk is made of (every backing file, parent, extent, data file)."""

FORMATS: dict[str, str] = {
    "raw": "scanner.acquisition.disk.containers.raw",
    "qcow2": "scanner.acquisition.disk.containers.qcow2",
    "vmdk": "scanner.acquisition.disk.containers.vmdk",
    "vhdx": "scanner.acquisition.disk.containers.vhdx",
    "vhd": "scanner.acquisition.disk.containers.vhd",
    "vdi": "scanner.acquisition.disk.containers.vdi",
}
UNSUPPORTED = {b"QED\x00": "QED"}
MAX_TABLE_BYTES = 64 * 1024 * 1024
"""Default ceiling for one container's translation tables in memory (qcow2 L1 and L2 cache, VMDK
grain directory); ``FilePolicy.disk_max_table_bytes`` sets it. QEMU itself caps an L1 at 32 MiB."""


@dataclass
class Chain:
    """The files one disk is made of (top first), the references not opened, and their handles."""

    confinement: Confinement
    max_table_bytes: int = MAX_TABLE_BYTES
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    closers: list[Callable[[], object]] = field(default_factory=list)
    depth: int = 0
    _seen: set[tuple[int, int]] = field(default_factory=set)

    def open_top(self, path: Path) -> StrictFile:
        """The image the user named (see :func:`open_image`); loads the parsers first."""
        preload()  # first imports, one thread at a time (see scanner.acquisition.preload)
        return self._add(open_image(path))

    def open_ref(self, name: str, beside: Path) -> StrictFile:
        """A file named by an image, confined; raises ReferenceRefused (see :meth:`absent`)."""
        return self._add(self.confinement.open(name, beside))

    def absent(self, what: str, error: ReferenceRefused, size: int = 0) -> BinaryIO:
        """Record that ``what`` was not opened and return a stand-in whose reads fail with the reason."""
        reason = f"{what} {error.where!r} {error.message.removeprefix(error.where + ': ')}: not opened"
        self.problems.append(reason)
        return cast(BinaryIO, Absent(size, reason))

    def _add(self, f: StrictFile) -> StrictFile:
        self.closers.append(f.close)
        st = os.fstat(f.fileno())
        if (st.st_dev, st.st_ino) in self._seen:
            raise DiskFormatError(str(f.path), "backing chain loops back to a file already in it")
        if len(self.files) >= MAX_FILES:
            raise DiskFormatError(str(f.path), f"disk made of more than {MAX_FILES} files")
        self._seen.add((st.st_dev, st.st_ino))
        self.files.append(str(f.path))
        return f

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception:  # noqa: S112 - closing a read-only handle; nothing to report
                continue
        self.closers.clear()


class Absent(io.RawIOBase):
    """A file that was not opened: seekable, ``size`` bytes long, every read raises MissingData."""

    def __init__(self, size: int, reason: str) -> None:
        super().__init__()
        self.size = size
        self.reason = reason
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = offset if whence == io.SEEK_SET else self._pos + offset if whence == io.SEEK_CUR else self.size
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        raise MissingData(self.reason)

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        raise MissingData(self.reason)

    def read_sectors(self, sector: int, count: int) -> bytes:
        """As a VMDK parent or extent: the same refusal."""
        raise MissingData(self.reason)


def sniff_format(head: bytes) -> str:
    """The container format from an image's first bytes (``raw`` when nothing else matches)."""
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if head.startswith((b"KDMV", b"COWD", b"# Disk DescriptorFile")):
        return "vmdk"
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head[64:68] == b"\x7f\x10\xda\xbe":
        return "vdi"
    if head.startswith(b"conectix"):
        return "vhd"
    for magic, name in UNSUPPORTED.items():
        if head.startswith(magic):
            raise DiskFormatError("image", f"unsupported container: {name}")
    return "raw"


def open_container(image: StrictFile, fmt: str, chain: Chain) -> tuple[BinaryIO, str]:
    """Read the already opened ``image`` as ``fmt`` (``auto`` sniffs); the guest-visible stream and format."""
    if fmt == "auto":
        try:
            image.seek(0)
            head = image.read(min(512, image.size))
        except OSError as e:
            raise DiskFormatError(str(image.path), str(e)) from e
        try:
            fmt = sniff_format(head)
        except DiskFormatError as e:
            raise DiskFormatError(str(image.path), e.message.removeprefix("image: ")) from e
    try:
        module = importlib.import_module(FORMATS[fmt])
    except KeyError:
        raise DiskFormatError(str(image.path), f"unknown format {fmt!r} (known: auto, {', '.join(FORMATS)})") from None
    opener = cast(Callable[[StrictFile, Chain], BinaryIO], module.open_disk)
    if chain.depth >= MAX_CHAIN:
        raise DiskFormatError(str(image.path), f"backing chain deeper than {MAX_CHAIN} images")
    chain.depth += 1
    try:
        image.seek(0)
        return opener(image, chain), fmt
    except (DiskFormatError, ImportError):
        raise
    except (TruncatedImage, RecursionError, MemoryError, Exception) as e:  # parsers raise anything on damage
        raise DiskFormatError(str(image.path), f"not a readable {fmt} image: {e}") from e
    finally:
        chain.depth -= 1
