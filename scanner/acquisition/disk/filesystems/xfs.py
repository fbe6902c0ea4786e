"""XFS (v4 and v5) through ``dissect.xfs``; the sweep by allocation walks the inode btrees."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from scanner.acquisition.disk.errors import unavailable
from scanner.acquisition.disk.filesystems import DamagedNode, Node
from scanner.acquisition.disk.filesystems.inode import InodeNode


def detect(head: bytes) -> bool:
    return head[:4] == b"XFSB"


def open_fs(stream: BinaryIO) -> Node:
    try:
        from dissect.xfs import XFS  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.xfs", e) from e
    fs = XFS(stream)
    return XfsRoot(fs)


class XfsRoot(InodeNode):
    """The root directory; :meth:`allocated` sweeps the inode btrees."""

    def __init__(self, fs: Any) -> None:
        super().__init__(fs.root, "")
        self.fs = fs

    def allocated(self) -> Iterator[Node] | None:
        from scanner.acquisition.disk.filesystems.xfs_sweep import allocated_files

        return allocated_files(self.fs, self._node)

    def _node(self, inum: int) -> Node:
        name = f"<inode {inum}>"
        try:
            return InodeNode(self.fs.get_inode(inum), name)
        except Exception as e:  # in use, but its record is unreadable
            return DamagedNode(name, inum, f"inode {inum} unreadable: {type(e).__name__}: {e}")
