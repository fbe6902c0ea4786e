"""XFS (v4 and v5) through ``dissect.xfs``."""

from __future__ import annotations

from typing import BinaryIO

from scanner.acquisition.disk.errors import unavailable
from scanner.acquisition.disk.filesystems import Node
from scanner.acquisition.disk.filesystems.inode import InodeNode


def detect(head: bytes) -> bool:
    return head[:4] == b"XFSB"


def open_fs(stream: BinaryIO) -> Node:
    try:
        from dissect.xfs import XFS  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.xfs", e) from e
    fs = XFS(stream)
    return InodeNode(fs.root, "")
