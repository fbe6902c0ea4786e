"""The ext sweep: every regular file the inode bitmaps say is in use, whatever the directories say.

Contract: for each block group (bounded by what the volume can hold), the inode bitmap's set bits
up to ``s_inodes_per_group`` (and never past ``s_inodes_count``) name the in-use inodes; the
reserved inodes below ``s_first_ino`` (journal, resize, quota) and extended-attribute inodes are
filesystem structures, not files. Each in-use inode whose mode (read straight from the group's
inode table, one read per group) is a regular file is yielded. A group marked ``INODE_UNINIT``
(on a filesystem with group checksums) has no inode in use. A group descriptor, bitmap or inode
table that cannot be read raises: the sweep itself is then incomplete, and the caller makes that
a gap.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Callable, Iterator
from typing import Any

from scanner.acquisition.disk.filesystems import FilesystemDamaged, Node

BG_INODE_UNINIT = 0x0001
RO_COMPAT_GDT_CSUM, RO_COMPAT_METADATA_CSUM = 0x0010, 0x0400
EA_INODE_FL = 0x00200000
GOOD_OLD_FIRST_INO = 11
GOOD_OLD_INODE_SIZE = 128


class SweepError(FilesystemDamaged):
    """The allocation data itself cannot be read."""


def allocated_files(fs: Any, volume_size: int, node: Callable[[int, int, int], Node]) -> Iterator[Node]:
    """``node(inum, size, flags)`` for every in-use regular file inode."""
    sb = fs.sb
    per_group = int(sb.s_inodes_per_group)
    count = int(sb.s_inodes_count)
    first = int(sb.s_first_ino) if sb.s_rev_level else GOOD_OLD_FIRST_INO
    inode_size = int(sb.s_inode_size) if sb.s_rev_level else GOOD_OLD_INODE_SIZE
    groups = int(fs.groups_count)
    if groups * per_group < count or groups > volume_size // int(fs.block_size) + 1:
        raise SweepError(f"superblock: {groups} groups of {per_group} inodes for {count} inodes do not fit")
    if inode_size < GOOD_OLD_INODE_SIZE:
        raise SweepError(f"superblock: inode size {inode_size}")
    checksummed = bool(sb.s_feature_ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM))
    for group in range(groups):
        desc = _descriptor(fs, group)
        base = group * per_group + 1
        used = [i for i in _in_use(fs, desc, group, per_group, checksummed) if first <= base + i <= count]
        if not used:
            continue
        table = _table(fs, desc, group, (used[-1] + 1) * inode_size)
        for index in used:
            raw = table[index * inode_size : index * inode_size + GOOD_OLD_INODE_SIZE]
            mode, flags = struct.unpack_from("<H", raw, 0)[0], struct.unpack_from("<I", raw, 0x20)[0]
            if stat.S_ISREG(mode) and not flags & EA_INODE_FL:
                size = struct.unpack_from("<I", raw, 0x04)[0] | struct.unpack_from("<I", raw, 0x6C)[0] << 32
                yield node(base + index, size, flags)


def _descriptor(fs: Any, group: int) -> Any:
    try:
        return fs._read_group_desc(group)
    except Exception as e:
        raise SweepError(f"group {group} descriptor unreadable: {type(e).__name__}: {e}") from e


def _address(desc: Any, field: str) -> int:
    low = int(getattr(desc, f"{field}_lo"))
    return low | int(getattr(desc, f"{field}_hi", 0)) << 32


def _in_use(fs: Any, desc: Any, group: int, per_group: int, checksummed: bool) -> Iterator[int]:
    """Indices within the group of the inodes its bitmap marks in use, ascending."""
    if checksummed and desc.bg_flags & BG_INODE_UNINIT:
        return
    block = _address(desc, "bg_inode_bitmap")
    fs.fh.seek(block * fs.block_size)
    bitmap = fs.fh.read((per_group + 7) // 8)
    if len(bitmap) * 8 < per_group:
        raise SweepError(f"group {group} inode bitmap at block {block} is unreadable")
    bits = int.from_bytes(bitmap, "little")
    while bits:
        low = bits & -bits
        index = low.bit_length() - 1
        if index >= per_group:
            return
        yield index
        bits ^= low


def _table(fs: Any, desc: Any, group: int, length: int) -> bytes:
    block = _address(desc, "bg_inode_table")
    fs.fh.seek(block * fs.block_size)
    table = bytes(fs.fh.read(length))
    if len(table) != length:
        raise SweepError(f"group {group} inode table at block {block} is unreadable")
    return table
