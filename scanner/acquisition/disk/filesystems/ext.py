"""ext2/3/4 through ``dissect.extfs``."""

from __future__ import annotations

import stat
import struct
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, BinaryIO

from scanner.acquisition.disk.errors import unavailable
from scanner.acquisition.disk.filesystems import Node

EXT_MAGIC = 0xEF53


def detect(head: bytes) -> bool:
    return len(head) >= 1082 and struct.unpack_from("<H", head, 1080)[0] == EXT_MAGIC


def open_fs(stream: BinaryIO) -> Node:
    try:
        from dissect.extfs import ExtFS  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.extfs", e) from e
    fs = ExtFS(stream)
    return ExtNode(fs.get(2), "")


_KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink"}


class ExtNode(Node):
    def __init__(self, inode: Any, name: str) -> None:
        self.inode = inode
        self.name = name
        self.key = inode.inum
        self.kind = _KINDS.get(inode.filetype, "other")
        self.size = int(inode.size) if self.kind == "file" else 0

    def children(self) -> Iterator[Node]:
        for child in self.inode.iterdir():
            if child.filename not in (".", ".."):
                yield ExtNode(child, child.filename)

    def open(self) -> BinaryIO:
        return self.inode.open()  # type: ignore[no-any-return]

    def times(self) -> Mapping[str, datetime | None]:
        i = self.inode
        return {"mtime": i.mtime, "ctime": i.ctime, "atime": i.atime, "crtime": i.crtime}
