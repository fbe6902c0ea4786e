"""Disk containers: an image file (and its backing files) -> the disk the guest sees.

One module per format, each with ``open_disk(path, chain) -> BinaryIO``; ``FORMATS`` is the
registry. :func:`sniff_format` detects the format from the first bytes. Backing chains are
bounded (:data:`MAX_CHAIN`) and each file in a chain is opened read-only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from scanner.acquisition.disk.errors import DiskFormatError, TruncatedImage
from scanner.acquisition.disk.image import StrictFile

MAX_CHAIN = 16
"""Longest backing/parent chain followed (a loop of backing files is an error, not a hang)."""

FORMATS: dict[str, str] = {
    "raw": "scanner.acquisition.disk.containers.raw",
    "qcow2": "scanner.acquisition.disk.containers.qcow2",
    "vmdk": "scanner.acquisition.disk.containers.vmdk",
    "vhdx": "scanner.acquisition.disk.containers.vhdx",
}


@dataclass
class Chain:
    """The files one disk is made of (top first), to bound and describe backing chains."""

    files: list[str] = field(default_factory=list)
    closers: list[Callable[[], object]] = field(default_factory=list)

    def add(self, path: Path) -> None:
        resolved = str(path.resolve())
        if resolved in self.files:
            raise DiskFormatError(str(path), f"backing chain loops back to {resolved}")
        if len(self.files) >= MAX_CHAIN:
            raise DiskFormatError(str(path), f"backing chain longer than {MAX_CHAIN} files")
        self.files.append(resolved)

    def open(self, path: Path) -> StrictFile:
        """Add ``path`` to the chain and open it read-only; it is closed with the chain."""
        self.add(path)
        f = StrictFile(path)
        self.closers.append(f.close)
        return f

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception:  # noqa: S112 - closing a read-only handle; nothing to report
                continue
        self.closers.clear()


def sniff_format(head: bytes) -> str:
    """The container format from an image's first bytes (``raw`` when nothing else matches)."""
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if head.startswith((b"KDMV", b"COWD", b"# Disk DescriptorFile")):
        return "vmdk"
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    return "raw"


def open_container(path: Path, fmt: str, chain: Chain) -> tuple[BinaryIO, str]:
    """Open ``path`` as ``fmt`` (``auto`` sniffs); returns the guest-visible stream and the format."""
    if fmt == "auto":
        try:
            with path.open("rb") as f:
                head = f.read(64)
        except OSError as e:
            raise DiskFormatError(str(path), e.strerror or str(e)) from e
        fmt = sniff_format(head)
    try:
        module = importlib.import_module(FORMATS[fmt])
    except KeyError:
        raise DiskFormatError(str(path), f"unknown format {fmt!r} (known: auto, {', '.join(FORMATS)})") from None
    opener = cast(Callable[[Path, Chain], BinaryIO], module.open_disk)
    try:
        return opener(path, chain), fmt
    except (DiskFormatError, ImportError):
        raise
    except (TruncatedImage, Exception) as e:  # parsers raise anything on a damaged header
        raise DiskFormatError(str(path), f"not a readable {fmt} image: {e}") from e
