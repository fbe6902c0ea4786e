"""ext2/3/4 through ``dissect.extfs`` for inodes and data; directories and the sweep are our own.

- Directories are parsed by :mod:`~scanner.acquisition.disk.filesystems.ext_dir` (kernel checks;
  a damaged block raises instead of shortening the listing), inline directories included.
- Inline data (``-O inline_data``): the first 60 bytes in ``i_block``, the rest in the
  ``system.data`` extended attribute.
- bigalloc: clusters change only allocation; every address is still in blocks, so the parser
  is handed the block size as the cluster size.
- A journal with committed changes not yet in place (a disk frozen under a running guest) is
  replayed in memory first (:mod:`~scanner.acquisition.disk.filesystems.ext_journal`); if it
  cannot be, the root's ``problem`` says so and the volume is read as it lies.
- A regular file encrypted with fscrypt is a gap (kind ``damaged``, problem says why): its
  contents are ciphertext without the user's key.
- Names are bytes in ext: undecodable bytes are kept as ``\\xNN`` escapes, never an error.
- :meth:`ExtNode.allocated` sweeps the inode bitmaps: every in-use regular file inode.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Iterator, Mapping
from datetime import datetime
from io import BytesIO
from typing import Any, BinaryIO

from scanner.acquisition.disk.errors import unavailable
from scanner.acquisition.disk.filesystems import DamagedNode, Node
from scanner.acquisition.disk.filesystems.ext_dir import DirectoryDamaged, block_entries
from scanner.acquisition.disk.filesystems.ext_journal import JournalDamaged, replay
from scanner.acquisition.disk.filesystems.inode import SweptInode

EXT_MAGIC = 0xEF53
SB_OFFSET = 1024
LOG_BLOCK, LOG_CLUSTER = 0x18, 0x1C  # superblock offsets of s_log_block_size, s_log_cluster_size
ROOT_INO = 2
INLINE_DATA_FL = 0x10000000
INLINE_SIZE = 60  # i_block
ENCRYPT_FL = 0x800
ENCRYPTED = "encrypted (fscrypt): the contents are ciphertext without the key, not scanned"
XATTR_SYSTEM = 7
INCOMPAT_FILETYPE = 0x0002
_KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink"}


def detect(head: bytes) -> bool:
    return len(head) >= 1082 and struct.unpack_from("<H", head, 1080)[0] == EXT_MAGIC


def open_fs(stream: BinaryIO) -> Node:
    try:
        from dissect.extfs import ExtFS  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.extfs", e) from e
    base, size = _cluster_as_block(stream), _stream_size(stream)
    fs = ExtFS(base)
    problem = ""
    try:
        recovered, blocks = replay(fs, base, size)
    except JournalDamaged as e:
        problem = f"journal not replayed, recent changes may be missing: {e}"
    else:
        fs = ExtFS(recovered) if blocks else fs
    root = ExtNode(fs, fs.get_inode(ROOT_INO), "", size)
    root.problem = problem
    return root


def _cluster_as_block(stream: BinaryIO) -> BinaryIO:
    """``stream``, with a bigalloc superblock's cluster size shown as its block size."""
    stream.seek(SB_OFFSET)
    sb = stream.read(LOG_CLUSTER + 4)
    if len(sb) < LOG_CLUSTER + 4 or sb[LOG_BLOCK : LOG_BLOCK + 4] == sb[LOG_CLUSTER : LOG_CLUSTER + 4]:
        return stream
    from dissect.util.stream import OverlayStream  # type: ignore[import-untyped,unused-ignore]

    patched = OverlayStream(stream, _stream_size(stream))
    patched.add(SB_OFFSET + LOG_CLUSTER, sb[LOG_BLOCK : LOG_BLOCK + 4])
    return patched  # type: ignore[no-any-return]


def _stream_size(stream: BinaryIO) -> int:
    size = getattr(stream, "size", None)
    return size if isinstance(size, int) else int(stream.seek(0, 2))


def display_name(raw: bytes) -> str:
    """A name as text: UTF-8 where it is, ``\\xNN`` for each byte that is not."""
    return raw.decode("utf-8", "backslashreplace")


class ExtNode(Node):
    """One inode; ``key`` is the inode number (hard links share it)."""

    def __init__(self, fs: Any, inode: Any, name: str, volume_size: int) -> None:
        self.fs = fs
        self.inode = inode
        self.name = name
        self.key = inode.inum
        self._volume_size = volume_size
        mode = int(inode.inode.i_mode)
        self.kind = _KINDS.get(stat.S_IFMT(mode), "other")
        self.size = int(inode.size) if self.kind == "file" else 0
        if self.kind == "file" and inode.inode.i_flags & ENCRYPT_FL:
            self.kind, self.problem = "damaged", ENCRYPTED

    def children(self) -> Iterator[Node]:
        inodes_count = int(self.fs.sb.s_inodes_count)
        has_filetype = bool(self.fs.sb.s_feature_incompat & INCOMPAT_FILETYPE)
        for where, area in self._dir_areas():
            for inum, raw, _ in block_entries(area, inodes_count, has_filetype=has_filetype, where=where):
                if raw in (b".", b".."):
                    continue
                yield self._child(inum, display_name(raw))

    def _child(self, inum: int, name: str) -> Node:
        try:
            return ExtNode(self.fs, self.fs.get_inode(inum), name, self._volume_size)
        except Exception as e:  # an unreadable inode record: this entry is damaged, not the directory
            return DamagedNode(name, inum, f"inode {inum} unreadable: {type(e).__name__}: {e}")

    def _dir_areas(self) -> Iterator[tuple[str, bytes]]:
        if self.inode.inode.i_flags & INLINE_DATA_FL:
            data = self._inline()
            yield f"inode {self.key} inline", data[4:INLINE_SIZE]  # 4 bytes: the parent's inode
            if len(data) > INLINE_SIZE:
                yield f"inode {self.key} inline xattr", data[INLINE_SIZE:]
            return
        block_size = int(self.fs.block_size)
        size = int(self.inode.size)
        if size % block_size or size > self._volume_size:
            raise DirectoryDamaged(f"inode {self.key}: directory size {size} is not whole blocks of the volume")
        stream = self.inode.open()
        for index in range(size // block_size):
            block = stream.read(block_size)
            if len(block) != block_size:
                raise DirectoryDamaged(f"inode {self.key}: directory block {index} is short")
            yield f"inode {self.key} block {index}", block

    def _inline(self) -> bytes:
        """Inline contents: ``i_block`` then the ``system.data`` attribute (whole, unsliced)."""
        head = bytes(self.inode.inode.i_block)[:INLINE_SIZE]
        for xattr in self.inode.xattr:
            if xattr.entry.e_name_index == XATTR_SYSTEM and bytes(xattr.entry.e_name) == b"data":
                return head + bytes(xattr.value)
        return head

    def open(self) -> BinaryIO:
        if self.inode.inode.i_flags & INLINE_DATA_FL:
            data = self._inline()
            if len(data) < self.size:
                raise DirectoryDamaged(f"inode {self.key}: inline data holds {len(data)} of {self.size} bytes")
            return BytesIO(data[: self.size])
        return self.inode.open()  # type: ignore[no-any-return]

    def times(self) -> Mapping[str, datetime | None]:
        i = self.inode
        return {"mtime": i.mtime, "ctime": i.ctime, "atime": i.atime, "crtime": i.crtime}

    def allocated(self) -> Iterator[Node] | None:
        from scanner.acquisition.disk.filesystems.ext_sweep import allocated_files

        return allocated_files(self.fs, self._volume_size, self._swept)

    def _swept(self, inum: int, size: int, flags: int) -> Node:
        if flags & ENCRYPT_FL:
            return DamagedNode(f"<inode {inum}>", inum, ENCRYPTED)
        return SweptInode(inum, size, lambda: self._child(inum, f"<inode {inum}>"))
