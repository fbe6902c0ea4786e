"""ext2/3/4 through ``dissect.extfs``."""

from __future__ import annotations

import struct
from typing import BinaryIO

from scanner.acquisition.disk.errors import unavailable
from scanner.acquisition.disk.filesystems import Node
from scanner.acquisition.disk.filesystems.inode import InodeNode

EXT_MAGIC = 0xEF53


def detect(head: bytes) -> bool:
    return len(head) >= 1082 and struct.unpack_from("<H", head, 1080)[0] == EXT_MAGIC


def open_fs(stream: BinaryIO) -> Node:
    try:
        from dissect.extfs import ExtFS  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.extfs", e) from e
    fs = ExtFS(stream)
    return InodeNode(fs.get(2), "")
