"""Filesystems inside a volume, behind one small interface: :class:`Node`.

One module per filesystem, each with ``detect(head) -> bool`` (from the volume's first 64 KiB)
and ``open_fs(stream) -> Node`` (the root directory); ``FILESYSTEMS`` is the registry, tried in
order. A backend maps its parser's objects onto :class:`Node` and nothing else: the walk, the
limits and the error accounting live in :mod:`scanner.acquisition.disk.walk`.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Hashable, Iterator, Mapping
from datetime import datetime
from typing import BinaryIO, cast

HEAD_SIZE = 65536

FILESYSTEMS: dict[str, str] = {
    "ext": "scanner.acquisition.disk.filesystems.ext",
    "xfs": "scanner.acquisition.disk.filesystems.xfs",
    "ntfs": "scanner.acquisition.disk.filesystems.ntfs",
    "fat": "scanner.acquisition.disk.filesystems.fat",
}


class FilesystemDamaged(Exception):
    """A structure inside a filesystem fails its own checks (a directory entry, allocation data);
    the message names the structure (inode, block, group)."""


class Node(abc.ABC):
    """A directory entry: ``kind`` is ``dir``, ``file``, ``symlink``, ``other`` or ``damaged``
    (an entry whose own record is unusable; ``problem`` says why).

    ``key`` identifies the underlying object (inode, MFT record, first cluster) so the walk can
    refuse to enter a directory twice (a looping directory in a damaged filesystem).
    On the root node, a non-empty ``problem`` is something the filesystem opened with that costs
    coverage (e.g. a journal that could not be replayed): the target records it as a gap.
    """

    name: str
    key: Hashable
    kind: str
    size: int
    problem: str = ""

    @abc.abstractmethod
    def children(self) -> Iterator[Node]:
        """Entries of a directory, without ``.`` and ``..``; parser errors propagate."""

    @abc.abstractmethod
    def open(self) -> BinaryIO:
        """The file's contents as a read-only stream."""

    def times(self) -> Mapping[str, datetime | None]:
        """Timestamps as the filesystem records them (``mtime``, ``ctime``, ``atime``, ``crtime``)."""
        return {}

    def allocated(self) -> Iterator[Node] | None:
        """The sweep by allocation, asked on the ROOT node only.

        ``None`` (the default) means this filesystem cannot sweep: the target then records
        ``<volume>.sweep = 0`` in its accounting and says so in its details. Otherwise an iterator
        over every allocated regular file the filesystem's own allocation data lists (inode
        bitmaps and tables, inode btrees, the MFT, the FAT), each data stream one Node of kind
        ``file``, whose ``key`` equals the key a directory walk reaching the same data produces.
        Nodes are unnamed (``name`` is a label such as ``<inode 4711>``); the walk collects the keys
        of the file nodes it reached, and every swept node whose key was not reached becomes a
        unit of its own. A record whose allocation says in use but which cannot be read is yielded
        with kind ``damaged`` and ``problem`` (it becomes a gap). Parser errors that stop the
        sweep itself propagate (the target turns them into a gap for the volume).
        """
        return None


class DamagedNode(Node):
    """An entry whose own record cannot be read (kind ``damaged``; ``problem`` says why)."""

    def __init__(self, name: str, key: Hashable, problem: str) -> None:
        self.name, self.key, self.kind, self.size, self.problem = name, key, "damaged", 0, problem

    def children(self) -> Iterator[Node]:
        return iter(())

    def open(self) -> BinaryIO:
        raise FilesystemDamaged(self.problem)


def detect_filesystem(stream: BinaryIO) -> str:
    """The name of the filesystem on ``stream`` (a key of ``FILESYSTEMS``), or ``""``."""
    stream.seek(0)
    head = stream.read(HEAD_SIZE)
    for name in FILESYSTEMS:
        if _backend(name, "detect")(head):
            return name
    return ""


def open_filesystem(name: str, stream: BinaryIO) -> Node:
    """The root directory of the ``name`` filesystem on ``stream``."""
    stream.seek(0)
    return cast(Node, _backend(name, "open_fs")(stream))


def _backend(name: str, attr: str) -> Callable[..., object]:
    return cast(Callable[..., object], getattr(importlib.import_module(FILESYSTEMS[name]), attr))


def iso(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None
