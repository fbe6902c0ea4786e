"""The file allocation table read once, whole, and followed with bounds.

Contract:
- ``chain(first, limit)`` follows a cluster chain from ``first`` to its end mark, at most
  ``limit`` clusters (a file needs no more than its size); a loop, a free or bad cluster, or a
  pointer outside the data area raises :class:`FatChainDamaged` naming the cluster. dissect.fat's
  own chain follower has no loop check; the backend hands dissect our run lists instead.
- ``heads()`` are the allocated clusters no other allocated cluster points to: the first cluster
  of every file and directory the FAT holds, reachable by a directory or not.
"""

from __future__ import annotations

import sys
from array import array
from typing import Any

from scanner.acquisition.disk.filesystems import FilesystemDamaged

BAD = {12: 0xFF7, 16: 0xFFF7, 32: 0x0FFFFFF7}
END = {12: 0xFF8, 16: 0xFFF8, 32: 0x0FFFFFF8}
FIRST_DATA_CLUSTER = 2


class FatChainDamaged(FilesystemDamaged):
    """A cluster chain loops or leaves the data area."""


class FatTable:
    def __init__(self, fs: Any) -> None:
        bpb = fs.bpb
        self.bits = int(fs.fat.bits_per_entry)
        data_sectors = int(fs.total_sectors) - int(fs.first_data_sector)
        self.clusters = max(0, data_sectors // int(bpb.BPB_SecPerClus))  # data clusters 2..clusters+1
        self.end = self.clusters + FIRST_DATA_CLUSTER
        need = (self.end * self.bits + 7) // 8
        if need > int(fs.fat_size) * int(fs.sector_size):
            raise FatChainDamaged(f"the FAT ({fs.fat_size} sectors) is too small for {self.clusters} clusters")
        fs.fh.seek(int(bpb.BPB_RsvdSecCnt) * int(fs.sector_size))
        raw = bytes(fs.fh.read(need))
        if len(raw) != need:
            raise FatChainDamaged("the FAT is unreadable: the volume ends inside it")
        self.entries = _decode(raw, self.bits, self.end)

    def next_of(self, cluster: int) -> int | None:
        """The next cluster, or None at the end of the chain."""
        value = self.entries[cluster]
        if value >= END[self.bits] or (self.bits == 12 and value == 0xFF0):
            return None
        if FIRST_DATA_CLUSTER <= value < self.end:
            return value
        what = "free" if value == 0 else "bad" if value == BAD[self.bits] else f"{value:#x}"
        raise FatChainDamaged(f"cluster {cluster} is followed by a {what} entry")

    def chain(self, first: int, limit: int | None = None) -> list[int]:
        if not FIRST_DATA_CLUSTER <= first < self.end:
            raise FatChainDamaged(f"first cluster {first} is outside the data area")
        clusters = [first]
        seen = {first}
        limit = self.clusters if limit is None else min(limit, self.clusters)
        while len(clusters) < limit:
            nxt = self.next_of(clusters[-1])
            if nxt is None:
                return clusters
            if nxt in seen:
                raise FatChainDamaged(f"the chain from cluster {first} loops at cluster {nxt}")
            seen.add(nxt)
            clusters.append(nxt)
        return clusters

    def heads(self) -> list[int]:
        """First clusters of every allocated chain, ascending."""
        bad = BAD[self.bits]
        allocated = [c for c in range(FIRST_DATA_CLUSTER, self.end) if self.entries[c] not in (0, bad)]
        pointed = {self.entries[c] for c in allocated}
        return [c for c in allocated if c not in pointed]


def runs(clusters: list[int]) -> list[tuple[int, int]]:
    """A cluster list as dissect run list entries: (data-area cluster index, count)."""
    out: list[tuple[int, int]] = []
    for cluster in clusters:
        index = cluster - FIRST_DATA_CLUSTER
        if out and out[-1][0] + out[-1][1] == index:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((index, 1))
    return out


def _decode(raw: bytes, bits: int, count: int) -> array[int]:
    if bits == 32:
        entries = _little(array("I", raw[: count * 4]))
        return array("I", (e & 0x0FFFFFFF for e in entries))
    if bits == 16:
        return _little(array("H", raw[: count * 2]))
    out = array("H")
    for cluster in range(count):
        pair = int.from_bytes(raw[cluster + cluster // 2 : cluster + cluster // 2 + 2], "little")
        out.append(pair >> 4 if cluster & 1 else pair & 0x0FFF)
    return out


def _little(entries: array[int]) -> array[int]:
    if sys.byteorder == "big":
        entries.byteswap()
    return entries
