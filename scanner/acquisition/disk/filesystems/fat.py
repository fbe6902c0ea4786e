"""FAT12/16/32 through ``dissect.fat`` (long file names; no symlinks exist on FAT)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, BinaryIO

from scanner.acquisition.disk.errors import unavailable
from scanner.acquisition.disk.filesystems import Node


def detect(head: bytes) -> bool:
    if len(head) < 512 or head[510:512] != b"\x55\xaa":
        return False
    return head[82:87] == b"FAT32" or head[54:59] in (b"FAT12", b"FAT16", b"FAT  ")


def open_fs(stream: BinaryIO) -> Node:
    try:
        from dissect.fat import FATFS  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.fat", e) from e
    fs = FATFS(stream)
    return FatNode(fs.root, "")


class FatNode(Node):
    def __init__(self, entry: Any, name: str) -> None:
        self.entry = entry
        self.name = name
        self.kind = "dir" if entry.is_directory() else "file"
        self.key = ("cluster", entry.cluster) if self.kind == "dir" else ("entry", id(entry))
        self.size = int(entry.size) if self.kind == "file" else 0

    def children(self) -> Iterator[Node]:
        for child in self.entry.iterdir():
            if child.name in (".", "..") or child.is_volume_id():
                continue
            yield FatNode(child, _display_name(child))

    def open(self) -> BinaryIO:
        return self.entry.open()  # type: ignore[no-any-return]

    def times(self) -> Mapping[str, datetime | None]:
        e = self.entry
        return {"mtime": e.mtime, "ctime": e.ctime, "atime": e.atime}


LOWER_BASE, LOWER_EXT = 0x08, 0x10  # DIR_NTRes: an 8.3 name stored upper case but shown lower case


def _display_name(entry: Any) -> str:
    """The name as Windows and Linux show it: the long name, else the 8.3 name with its case bits."""
    if entry.ldirents:
        return str(entry.name)
    flags = int(entry.dirent.DIR_NTRes)
    base, dot, ext = str(entry.short_name).partition(".")
    base = base.lower() if flags & LOWER_BASE else base
    ext = ext.lower() if flags & LOWER_EXT else ext
    return f"{base}{dot}{ext}"
