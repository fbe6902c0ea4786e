"""XFS (v4 and v5) through ``dissect.xfs``; the sweep by allocation walks the inode btrees.

A log with changes not yet in place (a disk frozen under a running guest) is not replayed: the
root's ``problem`` says so (:mod:`~scanner.acquisition.disk.filesystems.xfs_log`), a gap.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from scanner.acquisition.disk.errors import unavailable
from scanner.acquisition.disk.filesystems import DamagedNode, FilesystemDamaged, Node
from scanner.acquisition.disk.filesystems.inode import InodeNode, SweptInode

XFS_DINODE_FMT_LOCAL = 1
DIR_DATA_MAGICS = (b"XD2B", b"XD2D", b"XDB3", b"XDD3")  # block and data blocks, v4 and v5


def detect(head: bytes) -> bool:
    return head[:4] == b"XFSB"


def open_fs(stream: BinaryIO) -> Node:
    try:
        from dissect.xfs import XFS  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.xfs", e) from e
    from scanner.acquisition.disk.filesystems.xfs_log import log_problem

    fs = XFS(stream)
    root = XfsRoot(fs)
    root.problem = log_problem(fs)
    return root


class XfsNode(InodeNode):
    """An XFS inode. Before dissect lists a directory in block form, every block of its data
    section is checked: dissect skips a block whose magic is wrong as if it were a hole, which
    would shorten the listing silently; here such a block (not all zeros) is damage and raises."""

    def children(self) -> Iterator[Node]:
        if int(self.inode.inode.di_format) != XFS_DINODE_FMT_LOCAL:
            _check_data_blocks(self.inode)
        return super().children()

    def _child(self, inode: Any, name: str) -> Node:
        return XfsNode(inode, name)


def _check_data_blocks(inode: Any) -> None:
    block_size = int(inode.xfs.block_size)
    stream = inode.open()
    for index in range(int(inode.size) // block_size):
        stream.seek(index * block_size)
        block = stream.read(block_size)
        if block[:4] not in DIR_DATA_MAGICS and block.strip(b"\0"):
            raise FilesystemDamaged(f"inode {inode.inum}: directory block {index} is damaged (magic {block[:4]!r})")


class XfsRoot(XfsNode):
    """The root directory; :meth:`allocated` sweeps the inode btrees."""

    def __init__(self, fs: Any) -> None:
        super().__init__(fs.root, "")
        self.fs = fs

    def allocated(self) -> Iterator[Node] | None:
        from scanner.acquisition.disk.filesystems.xfs_sweep import allocated_files

        return allocated_files(self.fs, self._swept)

    def _swept(self, inum: int, size: int) -> Node:
        if size < 0:
            return DamagedNode(f"<inode {inum}>", inum, f"inode {inum} is in use but its record is not an inode")
        return SweptInode(inum, size, lambda: XfsNode(self.fs.get_inode(inum), f"<inode {inum}>"))
