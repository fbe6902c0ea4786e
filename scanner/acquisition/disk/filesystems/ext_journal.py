"""ext3/4 journal recovery in memory: the filesystem as the kernel sees it after mounting.

A disk frozen under a running guest (a live snapshot, a crash) has metadata the guest already
committed only in the journal: a file created seconds before has its inode, directory entry and
bitmaps there, not yet in place. Reading the volume as it lies would miss that file and call the
scan CLEAN. So, as the kernel's ``jbd2`` recovery does, without writing anything:

Contract:
- Only when the superblock says ``needs_recovery`` and the journal superblock's ``s_start`` is not 0.
- The log is read from ``s_start`` with ``s_sequence``, circularly within ``s_first..s_maxlen``,
  at most one lap; a transaction counts only when its commit block is found (a torn tail is
  dropped, as the kernel drops it); revoke records hide earlier copies of a block; escaped blocks
  get their magic back; the last committed copy of a block wins.
- :func:`replay` returns ``(stream, blocks)``: the volume with those blocks overlaid (unchanged
  when there is nothing to replay) and how many blocks were replayed. A journal that cannot be
  read raises :class:`JournalDamaged`; an external journal or fast-commit blocks are reported the
  same way (the caller reads the volume as it lies and records a gap).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from scanner.acquisition.disk.filesystems import FilesystemDamaged

INCOMPAT_RECOVER = 0x0004
JBD2_MAGIC = 0xC03B3998
DESCRIPTOR, COMMIT, REVOKE = 1, 2, 5
F_64BIT, F_CSUM_V2, F_CSUM_V3, F_FAST_COMMIT = 0x2, 0x8, 0x10, 0x20
FLAG_ESCAPE, FLAG_SAME_UUID, FLAG_LAST_TAG = 0x1, 0x2, 0x8
HEADER = struct.Struct(">III")  # magic, block type, sequence
JSB = struct.Struct(">12xIIIII")  # blocksize, maxlen, first, sequence, start
UUID_SIZE = 16


class JournalDamaged(FilesystemDamaged):
    """The journal cannot be recovered (the volume is read as it lies)."""


@dataclass
class _Log:
    blocks: dict[int, tuple[int, int, bool]] = field(default_factory=dict)  # fs block -> (seq, journal block, escaped)
    revoked: dict[int, int] = field(default_factory=dict)  # fs block -> latest revoking sequence


def needs_recovery(fs: Any) -> bool:
    return bool(fs.sb.s_feature_incompat & INCOMPAT_RECOVER)


def replay(fs: Any, stream: BinaryIO, size: int) -> tuple[BinaryIO, int]:
    """``stream`` with the committed, unrevoked journal blocks laid over it."""
    if not needs_recovery(fs):
        return stream, 0
    inum = int(fs.sb.s_journal_inum)
    if not inum:
        raise JournalDamaged("the journal is on another device: its changes are not applied")
    try:
        journal = fs.get_inode(inum).open()
        head = journal.read(1024)
    except Exception as e:
        raise JournalDamaged(f"journal inode {inum} unreadable: {type(e).__name__}: {e}") from e
    if len(head) < JSB.size + 36 or HEADER.unpack_from(head)[0] != JBD2_MAGIC:
        raise JournalDamaged(f"journal inode {inum} has no journal superblock")
    block_size, maxlen, first, sequence, start = JSB.unpack_from(head)
    incompat = struct.unpack_from(">I", head, 40)[0]
    if not start:
        return stream, 0  # the log is empty: everything is in place
    if block_size != fs.block_size or not 0 < first <= start < maxlen:
        raise JournalDamaged(f"journal superblock: block size {block_size}, log {first}..{maxlen}, start {start}")
    if incompat & F_FAST_COMMIT:
        raise JournalDamaged("the journal may hold fast commits, which are not replayed")
    log = _scan(journal, block_size, maxlen, first, sequence, start, incompat)
    return _overlay(stream, size, journal, block_size, log)


def _scan(journal: BinaryIO, bs: int, maxlen: int, first: int, seq: int, start: int, incompat: int) -> _Log:
    log = _Log()
    pending: list[tuple[int, int, bool]] = []
    position, visited = start, 0
    while visited < maxlen - first:
        block = _read(journal, position, bs)
        magic, kind, block_seq = HEADER.unpack_from(block)
        if magic != JBD2_MAGIC or block_seq != seq:
            break  # the end of the log
        visited += 1
        if kind == DESCRIPTOR:
            tags = list(_tags(block, incompat))
            for n, (fs_block, escaped) in enumerate(tags):
                pending.append((fs_block, _wrap(position + 1 + n, first, maxlen), escaped))
            visited += len(tags)
            position = _wrap(position + 1 + len(tags), first, maxlen)
            continue
        if kind == COMMIT:
            for fs_block, journal_block, escaped in pending:
                log.blocks[fs_block] = (seq, journal_block, escaped)
            pending, seq = [], seq + 1
        elif kind == REVOKE:
            for fs_block in _revokes(block, incompat):
                log.revoked[fs_block] = max(seq, log.revoked.get(fs_block, 0))
        position = _wrap(position + 1, first, maxlen)
    return log


def _tags(block: bytes, incompat: int) -> list[tuple[int, bool]]:
    """(filesystem block, escaped) of each tag of a descriptor block."""
    v3 = bool(incompat & F_CSUM_V3)
    size = 16 if v3 else 12 + (2 if incompat & F_CSUM_V2 else 0) - (0 if incompat & F_64BIT else 4)  # jbd2 tag bytes
    end = len(block) - (4 if incompat & (F_CSUM_V2 | F_CSUM_V3) else 0)
    offset, tags = HEADER.size, []
    while offset + size <= end:
        if v3:
            low, flags, high = struct.unpack_from(">III", block, offset)
        else:
            low, _, flags = struct.unpack_from(">IHH", block, offset)
            high = struct.unpack_from(">I", block, offset + 8)[0] if incompat & F_64BIT else 0
        tags.append((low | (high << 32 if incompat & F_64BIT else 0), bool(flags & FLAG_ESCAPE)))
        offset += size + (0 if flags & FLAG_SAME_UUID else UUID_SIZE)
        if flags & FLAG_LAST_TAG:
            return tags
    raise JournalDamaged("a descriptor block has no last tag")


def _revokes(block: bytes, incompat: int) -> list[int]:
    used = min(struct.unpack_from(">I", block, HEADER.size)[0], len(block))
    width = 8 if incompat & F_64BIT else 4
    fmt = ">Q" if width == 8 else ">I"
    return [struct.unpack_from(fmt, block, at)[0] for at in range(HEADER.size + 4, used - width + 1, width)]


def _overlay(stream: BinaryIO, size: int, journal: BinaryIO, bs: int, log: _Log) -> tuple[BinaryIO, int]:
    from dissect.util.stream import OverlayStream  # type: ignore[import-untyped,unused-ignore]

    overlay = OverlayStream(stream, size)
    count = 0
    for fs_block, (seq, journal_block, escaped) in sorted(log.blocks.items()):
        if log.revoked.get(fs_block, -1) >= seq or (fs_block + 1) * bs > size:
            continue
        data = bytearray(_read(journal, journal_block, bs))
        if escaped:
            data[:4] = struct.pack(">I", JBD2_MAGIC)
        overlay.add(fs_block * bs, bytes(data))
        count += 1
    return overlay, count


def _read(journal: BinaryIO, block: int, bs: int) -> bytes:
    journal.seek(block * bs)
    data = bytes(journal.read(bs))
    if len(data) != bs:
        raise JournalDamaged(f"journal block {block} is unreadable")
    return data


def _wrap(position: int, first: int, maxlen: int) -> int:
    return position - maxlen + first if position >= maxlen else position
