"""NTFS through ``dissect.ntfs``: the default data stream of each file record.

The reserved metadata records (MFT segments 0-15: ``$MFT``, ``$LogFile``, ``$Extend``...) are
filesystem structures, not guest files, and are not listed. Reparse points (symlinks, junctions,
mount points) are reported as ``symlink`` and never followed. Only the unnamed ``$DATA`` stream
is scanned (alternate data streams are a known limit).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, BinaryIO

from scanner.acquisition.disk.errors import unavailable
from scanner.acquisition.disk.filesystems import Node

FIRST_USER_RECORD = 16
KNOWN_RECORD_FLAGS = 0x0F  # in use, directory, in $Extend, view index
IN_USE = 0x01


def detect(head: bytes) -> bool:
    return head[3:11] == b"NTFS    "


def open_fs(stream: BinaryIO) -> Node:
    try:
        from dissect.ntfs import NTFS  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.ntfs", e) from e
    fs = NTFS(stream)
    return NtfsNode(fs.mft.root, "")


class NtfsNode(Node):
    def __init__(self, record: Any, name: str) -> None:
        self.record = record
        self.name = name
        self.key = record.segment
        self.size = 0
        flags = int(record.header.Flags) if record.header is not None else 0
        if flags & ~KNOWN_RECORD_FLAGS or not flags & IN_USE:
            self.kind = "damaged"
            self.problem = f"MFT record {record.segment} is damaged or not in use (flags {flags:#x})"
            return
        if record.is_reparse_point():
            self.kind = "symlink"
        elif record.is_dir():
            self.kind = "dir"
        else:
            self.kind = "file"
        self.size = int(record.size()) if self.kind == "file" and record.has_stream("") else 0

    def children(self) -> Iterator[Node]:
        seen: set[int] = set()
        for entry in self.record.iterdir(ignore_dos=True):
            record = entry.dereference()
            if record.segment < FIRST_USER_RECORD or record.segment in seen:
                continue  # metadata files; a name listed twice (hard links in one dir) once
            seen.add(record.segment)
            yield NtfsNode(record, entry.attribute.file_name)

    def open(self) -> BinaryIO:
        if not self.record.has_stream(""):
            from io import BytesIO

            return BytesIO(b"")
        return self.record.open()  # type: ignore[no-any-return]

    def times(self) -> Mapping[str, datetime | None]:
        info = self.record.attributes.STANDARD_INFORMATION
        if not info:
            return {}
        si = info[0]
        return {
            "mtime": si.last_modification_time,
            "ctime": si.last_change_time,
            "atime": si.last_access_time,
            "crtime": si.creation_time,
        }
