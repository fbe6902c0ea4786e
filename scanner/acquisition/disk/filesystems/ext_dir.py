"""ext2/3/4 directory entries, parsed the way the kernel checks them (``ext4_check_dir_entry``).

dissect.extfs's own ``iterdir`` never lists an entry in the last 12 bytes of a directory, drops
inode number ``s_inodes_count``, reads an inline directory as if it were a block, and stops
silently at a damaged entry. This parser is the one the ext backend uses instead.

Contract:
- ``block_entries`` yields ``(inode, name, file_type)`` for every live entry of one directory
  block (linear and htree directories alike: an htree's index blocks are one empty entry to a
  linear reader, as they are to the kernel's ext2-compatible path); ``name`` is the raw bytes.
- A damaged entry (a record length that is not 4-aligned, shorter than its name, or past the
  block; an inode number outside ``1..inodes_count``) raises :class:`DirectoryDamaged` after the
  good entries before it were yielded: the listing is never shortened silently.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from scanner.acquisition.disk.filesystems import FilesystemDamaged

HEADER = struct.Struct("<IHBB")  # inode, rec_len, name_len, file_type (name_len high byte on ext2)
MIN_REC_LEN = 12  # the header and a name of up to 4 bytes, rounded to 4
BIG_BLOCK = 65536


class DirectoryDamaged(FilesystemDamaged):
    """A directory entry fails the kernel's own checks."""


def rec_len_from_disk(value: int, block_size: int) -> int:
    """Record length on disk to bytes (a 64 KiB block stores 65536 as 0 or 65535)."""
    if block_size < BIG_BLOCK:
        return value
    if value in (0, 0xFFFF):
        return block_size
    return (value & 0xFFFC) | ((value & 3) << 16)


def block_entries(
    block: bytes, inodes_count: int, *, has_filetype: bool, where: str = ""
) -> Iterator[tuple[int, bytes, int]]:
    """Live entries of one directory block (or of an inline directory's area)."""
    offset = 0
    size = len(block)
    while offset < size:
        if offset + HEADER.size > size:
            raise DirectoryDamaged(f"{where}: entry header at {offset} runs past the block")
        inode, raw_len, name_len, file_type = HEADER.unpack_from(block, offset)
        rec_len = rec_len_from_disk(raw_len, size)
        if not has_filetype:
            name_len, file_type = name_len | file_type << 8, 0
        problem = _check(offset, size, rec_len, name_len) or _check_inode(inode, name_len, inodes_count)
        if problem:
            raise DirectoryDamaged(f"{where}: entry at {offset}: {problem}")
        if inode:
            yield inode, bytes(block[offset + 8 : offset + 8 + name_len]), file_type
        offset += rec_len


def _check(offset: int, size: int, rec_len: int, name_len: int) -> str:
    if rec_len < MIN_REC_LEN and not (rec_len == size - offset and rec_len >= HEADER.size):
        return f"record length {rec_len} is too short"
    if rec_len % 4:
        return f"record length {rec_len} is not a multiple of 4"
    if offset + rec_len > size:
        return f"record length {rec_len} runs past the block"
    if HEADER.size + name_len > rec_len:
        return f"name of {name_len} bytes does not fit in {rec_len}"
    return ""


def _check_inode(inode: int, name_len: int, inodes_count: int) -> str:
    if inode and not name_len:
        return "an entry with an empty name"
    if inode > inodes_count:
        return f"inode {inode} is past the last inode {inodes_count}"
    return ""
