"""Nodes over inodes: a dissect.xfs inode in the tree, and an inode found by a sweep."""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, BinaryIO

from scanner.acquisition.disk.filesystems import Node

_KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink"}


def shown_name(name: str) -> str:
    """A name the parser decoded with ``surrogateescape`` as text: undecodable bytes as ``\\xNN``
    (a surrogate cannot be encoded for YARA, the store or the wire)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class InodeNode(Node):
    """``inode`` is a dissect.extfs or dissect.xfs INode (inum, filetype, size, iterdir, open, times)."""

    def __init__(self, inode: Any, name: str) -> None:
        self.inode = inode
        self.name = name
        self.key = inode.inum
        self.kind = _KINDS.get(inode.filetype, "other")
        self.size = int(inode.size) if self.kind == "file" else 0

    def children(self) -> Iterator[Node]:
        for child in self.inode.iterdir():
            if child.filename not in (".", ".."):
                yield self._child(child, shown_name(child.filename))

    def _child(self, inode: Any, name: str) -> Node:
        return InodeNode(inode, name)

    def open(self) -> BinaryIO:
        return self.inode.open()  # type: ignore[no-any-return]

    def times(self) -> Mapping[str, datetime | None]:
        i = self.inode
        return {"mtime": i.mtime, "ctime": i.ctime, "atime": i.atime, "crtime": i.crtime}


class SweptInode(Node):
    """A regular file inode the sweep found: key and size from the raw inode table; the inode is
    parsed only when the file is read (most swept inodes were reached by the walk already)."""

    def __init__(self, inum: int, size: int, parse: Callable[[], Node]) -> None:
        self.name = f"<inode {inum}>"
        self.key = inum
        self.kind = "file"
        self.size = size
        self._parse = parse
        self._node: Node | None = None

    def _inode(self) -> Node:
        if self._node is None:
            self._node = self._parse()
        return self._node

    def children(self) -> Iterator[Node]:
        return iter(())

    def open(self) -> BinaryIO:
        return self._inode().open()

    def times(self) -> Mapping[str, datetime | None]:
        return self._inode().times()
