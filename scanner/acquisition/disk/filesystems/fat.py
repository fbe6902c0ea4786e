"""FAT12/16/32 through ``dissect.fat`` (long file names; no symlinks exist on FAT).

Cluster chains are followed by :mod:`~scanner.acquisition.disk.filesystems.fat_table` (bounded,
loop-checked) and handed to dissect as run lists. A node's key is its first cluster. The sweep
(:meth:`FatNode.allocated` on the root) offers every allocated chain whose first cluster no walked
directory and no walked file starts at: a file (or directory) only the FAT still knows, scanned
whole as ``<cluster N>`` (its size is the chain's, to the end of its last cluster).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from io import BytesIO
from typing import Any, BinaryIO

from scanner.acquisition.disk.errors import unavailable
from scanner.acquisition.disk.filesystems import DamagedNode, Node
from scanner.acquisition.disk.filesystems.fat_table import FatChainDamaged, FatTable, runs


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
    return FatNode(fs.root, "", _Volume(fs))


class _Volume:
    """What nodes of one filesystem share: the table (read on first use), the walked directories."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        self.listed: set[int] = set()
        self._table: FatTable | None = None

    @property
    def table(self) -> FatTable:
        if self._table is None:
            self._table = FatTable(self.fs)
        return self._table


class FatNode(Node):
    def __init__(self, entry: Any, name: str, volume: _Volume) -> None:
        self.entry = entry
        self.name = name
        self._volume = volume
        self.kind = "dir" if entry.is_directory() else "file"
        cluster = entry.cluster
        self.key = ("cluster", cluster) if cluster or self.kind == "dir" else ("entry", id(entry))
        self.size = int(entry.size) if self.kind == "file" else 0

    def children(self) -> Iterator[Node]:
        cluster = self.entry.cluster
        if cluster:  # FAT12/16's root is a fixed region, not a chain
            self._volume.listed.add(cluster)
            self.entry._runlist = runs(self._volume.table.chain(cluster))
        for child in self.entry.iterdir():
            if child.name in (".", "..") or child.is_volume_id():
                continue
            yield FatNode(child, _display_name(child), self._volume)

    def open(self) -> BinaryIO:
        cluster_size = int(self._volume.fs.cluster_size)
        needed = (self.size + cluster_size - 1) // cluster_size
        if not needed:
            return BytesIO(b"")
        chain = self._volume.table.chain(int(self.entry.cluster), needed)
        if len(chain) < needed:
            raise FatChainDamaged(f"the chain from cluster {self.entry.cluster} ends after {len(chain)} of {needed}")
        self.entry._runlist = runs(chain)
        return self.entry.open()  # type: ignore[no-any-return]

    def times(self) -> Mapping[str, datetime | None]:
        e = self.entry
        return {"mtime": e.mtime, "ctime": e.ctime, "atime": e.atime}

    def allocated(self) -> Iterator[Node] | None:
        table = self._volume.table
        return (_chain_node(self._volume, head) for head in table.heads() if head not in self._volume.listed)


class _Chain(Node):
    """An allocated chain as a file: its clusters, whole."""

    def __init__(self, volume: _Volume, head: int, clusters: list[int]) -> None:
        self._volume = volume
        self._runs = runs(clusters)
        self.name = f"<cluster {head}>"
        self.key = ("cluster", head)
        self.kind = "file"
        self.size = len(clusters) * int(volume.fs.cluster_size)

    def children(self) -> Iterator[Node]:
        return iter(())

    def open(self) -> BinaryIO:
        from dissect.util.stream import RunlistStream  # type: ignore[import-untyped,unused-ignore]

        fs = self._volume.fs
        return RunlistStream(fs.data_stream, self._runs, self.size, fs.cluster_size)  # type: ignore[no-any-return]


def _chain_node(volume: _Volume, head: int) -> Node:
    try:
        return _Chain(volume, head, volume.table.chain(head))
    except FatChainDamaged as e:
        return DamagedNode(f"<cluster {head}>", ("cluster", head), str(e))


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
