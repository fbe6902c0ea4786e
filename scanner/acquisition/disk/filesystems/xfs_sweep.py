"""The XFS sweep: every allocated regular file the inode btrees (one per allocation group) list.

Contract: each allocation group's inode btree (root and height from its AGI) is walked by our own
bounded walker (a node's children are exactly one level lower, no block twice, record counts
within the block, addresses within the group); each record covers 64 inodes from
``ir_startino``, a clear bit of ``ir_free`` is an inode in use (sparse chunks mark their holes
free). In-use inodes that are regular files (mode and size read raw from the chunk, one read per
record) are yielded, except the filesystem's own metadata files (realtime bitmap and summary,
quota inodes); an in-use slot without an inode's magic is yielded with size -1 (read, it fails). A damaged btree raises
:class:`XfsSweepError`: the sweep is then incomplete and the caller makes that a gap.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Callable, Iterator
from typing import Any

from scanner.acquisition.disk.filesystems import FilesystemDamaged, Node

IBT_MAGICS = (0x49414254, 0x49414233)  # 'IABT', 'IAB3' (v5, with CRC)
SHORT_HEADER, SHORT_HEADER_CRC = 16, 56
RECORD = struct.Struct(">IIQ")  # ir_startino, (freecount | holemask, count, freecount), ir_free
INODES_PER_RECORD = 64
MAX_LEVELS = 16
CORE = struct.Struct(">2sH52xQ")  # di_magic, di_mode, ..., di_size at 56


class XfsSweepError(FilesystemDamaged):
    """An inode btree cannot be read."""


def allocated_files(fs: Any, node: Callable[[int, int], Node]) -> Iterator[Node]:
    """``node(inum, size)`` for every in-use regular file inode (mode and size read raw)."""
    sb = fs.sb
    metadata = {int(sb.sb_rbmino), int(sb.sb_rsumino), int(sb.sb_uquotino), int(sb.sb_gquotino)}
    metadata.add(int(getattr(sb, "sb_pquotino", 0)))
    for agno in range(int(sb.sb_agcount)):
        try:
            agi = fs.get_allocation_group(agno).agi
        except Exception as e:
            raise XfsSweepError(f"allocation group {agno}: AGI unreadable: {type(e).__name__}: {e}") from e
        for start, free in _records(fs, agno, int(agi.agi_root), int(agi.agi_level)):
            yield from _chunk(fs, agno, start, free, metadata, node)


def _chunk(
    fs: Any, agno: int, start: int, free: int, metadata: set[int], node: Callable[[int, int], Node]
) -> Iterator[Node]:
    """The regular files among one record's 64 inodes (one read of the chunk)."""
    sb = fs.sb
    inum_bits = int(sb.sb_agblklog) + int(sb.sb_inopblog)
    if start + INODES_PER_RECORD > int(sb.sb_agblocks) * int(sb.sb_inopblock):
        raise XfsSweepError(f"allocation group {agno}: inode record at {start} is past the group")
    size = int(sb.sb_inodesize)
    agbno, slot = start >> int(sb.sb_inopblog), start & (int(sb.sb_inopblock) - 1)
    fs.fh.seek((agno * int(sb.sb_agblocks) + agbno) * int(fs.block_size) + slot * size)
    chunk = bytes(fs.fh.read(INODES_PER_RECORD * size))
    for index in range(INODES_PER_RECORD):
        inum = (agno << inum_bits) | (start + index)
        if free >> index & 1 or inum in metadata:
            continue
        core = chunk[index * size : index * size + CORE.size]
        if len(core) < CORE.size or core[:2] != b"IN":
            yield node(inum, -1)  # in use, but no inode there: read (and fail) as itself
            continue
        mode, file_size = CORE.unpack_from(core)[1], CORE.unpack_from(core)[2]
        if stat.S_ISREG(mode):
            yield node(inum, file_size)


def _records(fs: Any, agno: int, root: int, levels: int) -> Iterator[tuple[int, int]]:
    """(startino, free mask) of every leaf record of one group's inode btree."""
    if not 0 < levels <= MAX_LEVELS:
        raise XfsSweepError(f"allocation group {agno}: inode btree of {levels} levels")
    seen: set[int] = set()
    stack = [(root, levels - 1)]
    while stack:
        block, level = stack.pop()
        data = _block(fs, agno, block, seen)
        count = _check(data, agno, block, level, bool(fs._has_crc))
        header = SHORT_HEADER_CRC if fs._has_crc else SHORT_HEADER
        if level == 0:
            for n in range(count):
                start, _, free = RECORD.unpack_from(data, header + n * RECORD.size)
                yield start, free
            continue
        maxrecs = (len(data) - header) // 8
        ptrs = struct.unpack_from(f">{count}I", data, header + maxrecs * 4)
        stack.extend((ptr, level - 1) for ptr in reversed(ptrs))


def _block(fs: Any, agno: int, block: int, seen: set[int]) -> bytes:
    if block in seen or not 0 < block < int(fs.sb.sb_agblocks):
        raise XfsSweepError(f"allocation group {agno}: inode btree block {block} is out of range or seen twice")
    seen.add(block)
    size = int(fs.block_size)
    fs.fh.seek((agno * int(fs.sb.sb_agblocks) + block) * size)
    data = bytes(fs.fh.read(size))
    if len(data) != size:
        raise XfsSweepError(f"allocation group {agno}: inode btree block {block} is unreadable")
    return data


def _check(data: bytes, agno: int, block: int, level: int, crc: bool) -> int:
    magic, node_level, count = struct.unpack_from(">IHH", data, 0)
    header = SHORT_HEADER_CRC if crc else SHORT_HEADER
    room = (len(data) - header) // (RECORD.size if level == 0 else 8)
    if magic not in IBT_MAGICS or node_level != level or count > room:
        detail = f"magic {magic:#x}, level {node_level} (expected {level}), {count} records"
        raise XfsSweepError(f"allocation group {agno}: inode btree block {block} is damaged: {detail}")
    return int(count)
