"""The ext sweep: every regular file the inode bitmaps say is in use, whatever the directories say.

Contract: for each block group (bounded by what the volume can hold), the inode bitmap's set bits
up to ``s_inodes_per_group`` (and never past ``s_inodes_count``) name the in-use inodes; the
reserved inodes below ``s_first_ino`` (journal, resize, quota) and extended-attribute inodes are
filesystem structures, not files. Each in-use inode whose mode is a regular file is yielded (an
unreadable inode record as a ``damaged`` node). A group marked ``INODE_UNINIT`` (on a filesystem
with group checksums) has no inode in use. A group descriptor or bitmap that cannot be read
raises: the sweep itself is then incomplete, and the caller makes that a gap.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from typing import Any

from scanner.acquisition.disk.filesystems import FilesystemDamaged, Node

BG_INODE_UNINIT = 0x0001
RO_COMPAT_GDT_CSUM, RO_COMPAT_METADATA_CSUM = 0x0010, 0x0400
EA_INODE_FL = 0x00200000
GOOD_OLD_FIRST_INO = 11


class SweepError(FilesystemDamaged):
    """The allocation data itself cannot be read."""


def allocated_files(fs: Any, volume_size: int, node: Callable[[int], Node]) -> Iterator[Node]:
    sb = fs.sb
    per_group = int(sb.s_inodes_per_group)
    count = int(sb.s_inodes_count)
    first = int(sb.s_first_ino) if sb.s_rev_level else GOOD_OLD_FIRST_INO
    groups = int(fs.groups_count)
    if groups * per_group < count or groups > volume_size // int(fs.block_size) + 1:
        raise SweepError(f"superblock: {groups} groups of {per_group} inodes for {count} inodes do not fit")
    checksummed = bool(sb.s_feature_ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM))
    for group in range(groups):
        for inum in _in_use(fs, group, per_group, checksummed):
            if inum > count:
                break
            if inum < first:
                continue
            yield from _regular(fs, inum, node)


def _in_use(fs: Any, group: int, per_group: int, checksummed: bool) -> Iterator[int]:
    try:
        desc = fs._read_group_desc(group)
    except Exception as e:
        raise SweepError(f"group {group} descriptor unreadable: {type(e).__name__}: {e}") from e
    if checksummed and desc.bg_flags & BG_INODE_UNINIT:
        return
    block = int(desc.bg_inode_bitmap_lo)
    if hasattr(desc, "bg_inode_bitmap_hi"):
        block |= int(desc.bg_inode_bitmap_hi) << 32
    fs.fh.seek(block * fs.block_size)
    bitmap = fs.fh.read((per_group + 7) // 8)
    if len(bitmap) * 8 < per_group:
        raise SweepError(f"group {group} inode bitmap at block {block} is unreadable")
    bits = int.from_bytes(bitmap, "little")
    base = group * per_group + 1
    while bits:
        low = bits & -bits
        index = low.bit_length() - 1
        if index >= per_group:
            return
        yield base + index
        bits ^= low


def _regular(fs: Any, inum: int, node: Callable[[int], Node]) -> Iterator[Node]:
    try:
        raw = fs.get_inode(inum).inode
        mode, flags = int(raw.i_mode), int(raw.i_flags)
    except Exception:
        yield node(inum)  # the record is unreadable: node() makes it a damaged entry
        return
    if stat.S_ISREG(mode) and not flags & EA_INODE_FL:
        yield node(inum)
