"""Compressed kdump (``KDUMP``/``DISKDUMP``): what ``makedumpfile``, ``virsh dump --memory-only
--format kdump-*`` and QEMU's ``dump-guest-memory format=kdump-*`` write, plain or flattened.

Layout (block = the header's ``block_size``, the guest page size):

- block 0: the disk dump header (signature, version, ``block_size``, ``sub_hdr_size``,
  ``bitmap_blocks``, ``max_mapnr``); then ``sub_hdr_size`` blocks of the kdump sub-header
  (``dump_level``; from version 6 the 64-bit ``max_mapnr_64``);
- ``bitmap_blocks`` blocks of two equal bitmaps, one bit per page frame, least significant bit
  first: the first says which frames exist, the second which were dumped;
- one 24-byte page descriptor (file offset, stored size, compression flags) per dumped frame, in
  frame order, then the page data: raw, or compressed with zlib, LZO, snappy or zstd.

The **flattened** form (QEMU before 8.2 and libvirt write it, makedumpfile ``-F`` too) is the same
file cut into records ``(offset, size, bytes)`` after a 4 KiB ``makedumpfile`` header, so it
could be written to a pipe; :class:`_Flattened` reads it through an index of those records.

Coverage is accounted from the dump's own bitmaps: frames that exist and were dumped are the
address map; frames that exist but were left out because they were all zero (``dump_level``
bit 1, and nothing else excluded) are known zeros; frames left out for any other reason
(page cache, user data, free pages: ``dump_level`` bits 2-16) are ``unreadable()`` with the
dump level named, so such a dump is INCOMPLETE, never CLEAN. A page whose compressed data does
not decompress to exactly one block, or whose compression library is not installed, is an
unreadable window naming the page, never zeros.

Hostile input: the header's sizes are checked against the file and bounded (``MAX_BITMAP``,
``MAX_RUNS``, ``MAX_FLAT_RECORDS``); descriptors pointing outside the file are unreadable.
"""

from __future__ import annotations

import bisect
import itertools
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from scanner.acquisition.memory.base import MemorySource, PhysRange
from scanner.acquisition.memory.bitmaps import clip, frame_runs
from scanner.errors import SourceError, UnreadableError

SIGNATURES = (b"KDUMP   ", b"DISKDUMP")
FLAT_SIGNATURE = b"makedumpfile\0"
FLAT_HEADER_SIZE = 4096
MAX_BITMAP = 256 << 20  # two bitmaps of 128 MiB: 1 Gi frames, 4 TiB of 4 KiB pages
MAX_RUNS = 1 << 16
MAX_FLAT_RECORDS = 1 << 22
MAX_BLOCK = 1 << 16
DESC = struct.Struct("<qIIQ")  # offset, size, flags, page_flags
HEADER = struct.Struct("<8si")  # signature, header_version
HEADER_FIELDS = struct.Struct("<IiiIIIIIIi")  # at 424: status .. nr_cpus (x86_64 layout)
HEADER_FIELDS_AT = 424
SUB_DUMP_LEVEL_AT = 8
SUB_MAX_MAPNR_64_AT = 96
ZERO_PAGES = 0x01  # dump_level bit: pages that were all zero are not dumped
COMPRESS = {0x01: "zlib", 0x02: "lzo", 0x04: "snappy", 0x20: "zstd"}
RANK_CHUNK = 64  # bytes of bitmap per cumulative popcount (512 frames)


class _File:
    """The dump as one seekable byte space (a plain file)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            return b""
        return os.pread(self.fd, length, offset)


class _Flattened(_File):
    """A flattened dump: records of ``(offset, size)`` big-endian headers followed by the bytes."""

    def __init__(self, fd: int, size: int, name: str) -> None:
        super().__init__(fd, size)
        starts: list[int] = []
        records: list[tuple[int, int, int]] = []  # (virtual offset, size, file offset)
        at = FLAT_HEADER_SIZE
        while True:
            head = os.pread(fd, 16, at)
            if len(head) < 16:
                raise SourceError(name, f"flattened kdump: record header at {at:#x} is past the end (truncated dump)")
            voff, length = struct.unpack(">qq", head)
            if voff == -1 and length == -1:
                break
            if voff < 0 or length < 0 or at + 16 + length > size:
                raise SourceError(name, f"flattened kdump: record at {at:#x} ({voff:#x}, {length} bytes) is invalid")
            if len(records) >= MAX_FLAT_RECORDS:
                raise SourceError(name, f"flattened kdump: more than {MAX_FLAT_RECORDS} records")
            records.append((voff, length, at + 16))
            at += 16 + length
        records.sort()
        for a, b in itertools.pairwise(records):
            if b[0] < a[0] + a[1]:
                raise SourceError(name, f"flattened kdump: records overlap at offset {b[0]:#x}")
        self._records = records
        starts = [r[0] for r in records]
        self._starts = starts
        self.size = records[-1][0] + records[-1][1] if records else 0

    def pread(self, offset: int, length: int) -> bytes:
        """The bytes at virtual ``offset``, as the plain dump would hold them: what no record
        wrote reads as zeros (a sparse file's hole), past the last record is short (``b""``)."""
        if offset < 0 or length < 0 or offset + length > self.size:
            return b""
        out = bytearray(length)
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while i < len(self._records) and self._records[i][0] < offset + length:
            voff, size, foff = self._records[i]
            lo, hi = max(offset, voff), min(offset + length, voff + size)
            if lo < hi:
                out[lo - offset : hi - offset] = os.pread(self.fd, hi - lo, foff + lo - voff)
            i += 1
        return bytes(out)


@dataclass(frozen=True)
class _Header:
    version: int
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int
    dump_level: int


class KdumpMemory(MemorySource):
    """Guest physical memory from a (flattened or plain) compressed kdump."""

    format = "kdump"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SourceError(path, f"cannot open memory image: {e.strerror}") from e
        try:
            size = os.fstat(self._fd).st_size
            head = os.pread(self._fd, len(FLAT_SIGNATURE), 0)
            self._file = _Flattened(self._fd, size, path) if head == FLAT_SIGNATURE else _File(self._fd, size)
            self.flattened = head == FLAT_SIGNATURE
            self.header = self._parse_header()
            self._load_bitmaps()
        except BaseException:
            self.close()
            raise

    # -- header and bitmaps ------------------------------------------------------------------

    def _parse_header(self) -> _Header:
        raw = self._file.pread(0, HEADER_FIELDS_AT + HEADER_FIELDS.size)
        if len(raw) < HEADER_FIELDS_AT + HEADER_FIELDS.size:
            raise SourceError(self.name, "kdump header is truncated")
        signature, version = HEADER.unpack_from(raw)
        if signature not in SIGNATURES:
            raise SourceError(self.name, f"not a kdump (signature {signature!r})")
        _, block_size, sub_hdr_size, bitmap_blocks, max_mapnr, *_ = HEADER_FIELDS.unpack_from(raw, HEADER_FIELDS_AT)
        if block_size < 512 or block_size > MAX_BLOCK or block_size & (block_size - 1):
            raise SourceError(self.name, f"kdump block size {block_size} is not a power of two in 512..{MAX_BLOCK}")
        if sub_hdr_size < 0 or bitmap_blocks <= 0 or bitmap_blocks * block_size > MAX_BITMAP:
            detail = f"kdump bitmap of {bitmap_blocks} blocks is invalid (limit {MAX_BITMAP} bytes)"
            raise SourceError(self.name, detail)
        dump_level = 0
        if sub_hdr_size > 0:
            sub = self._file.pread(block_size, sub_hdr_size * block_size)
            if len(sub) < SUB_MAX_MAPNR_64_AT + 8:
                raise SourceError(self.name, "kdump sub-header is truncated")
            dump_level = struct.unpack_from("<i", sub, SUB_DUMP_LEVEL_AT)[0]
            if version >= 6:
                max_mapnr = struct.unpack_from("<Q", sub, SUB_MAX_MAPNR_64_AT)[0] or max_mapnr
        return _Header(version, block_size, sub_hdr_size, bitmap_blocks, max_mapnr, dump_level)

    def _load_bitmaps(self) -> None:
        h = self.header
        length = h.bitmap_blocks * h.block_size
        raw = self._file.pread(h.block_size * (1 + h.sub_hdr_size), length)
        if len(raw) < length:
            raise SourceError(self.name, f"kdump bitmaps ({length} bytes) run past the end of the dump")
        half = length // 2
        frames = min(h.max_mapnr, half * 8)
        self._valid = clip(raw[:half], frames)
        self._dumped = clip(raw[half:], frames)
        self._desc_at = h.block_size * (1 + h.sub_hdr_size + h.bitmap_blocks)
        self._rank = _ranks(self._dumped)
        zero_only = h.dump_level & ~ZERO_PAGES == 0
        present: list[PhysRange] = []
        absent: list[tuple[PhysRange, str]] = []
        bs = h.block_size
        for start, end, dumped in frame_runs(self._valid, self._dumped):
            r = PhysRange(start * bs, (end - start) * bs)
            if dumped or zero_only:
                present.append(r)
            else:
                absent.append((r, f"left out of the dump by makedumpfile dump level {h.dump_level} (not all zero)"))
            if len(present) + len(absent) > MAX_RUNS:
                raise SourceError(self.name, f"kdump bitmap has more than {MAX_RUNS} runs of frames")
        self._present = _joined(present)
        self._absent = absent

    # -- the MemorySource interface ----------------------------------------------------------

    def _ranges(self) -> Sequence[PhysRange]:
        return self._present

    def unreadable(self) -> Sequence[tuple[PhysRange, str]]:
        return self._absent

    def holes(self, address: int, length: int) -> Sequence[tuple[int, int]]:
        """Frames that exist but were not dumped because they were all zero."""
        bs = self.header.block_size
        out: list[tuple[int, int]] = []
        for pfn in range(address // bs, -(-(address + length) // bs)):
            if _bit(self._valid, pfn) and not _bit(self._dumped, pfn):
                lo, hi = max(address, pfn * bs), min(address + length, (pfn + 1) * bs)
                if out and out[-1][1] == lo:
                    out[-1] = (out[-1][0], hi)
                else:
                    out.append((lo, hi))
        return out

    def files(self) -> Sequence[str]:
        return (self.name,)

    def _window(self, address: int, length: int) -> AbstractContextManager[memoryview]:
        return self._view(address, length)

    @contextmanager
    def _view(self, address: int, length: int) -> Iterator[memoryview]:
        bs = self.header.block_size
        first, end = address // bs, -(-(address + length) // bs)
        descriptors = self._descriptors(first, end)
        buf = bytearray(length)
        for pfn in range(first, end):
            desc = descriptors.get(pfn)
            page = bytes(bs) if desc is None else self._page(pfn, desc)  # None: a known-zero frame
            lo = max(address, pfn * bs)
            hi = min(address + length, (pfn + 1) * bs)
            buf[lo - address : hi - address] = page[lo - pfn * bs : hi - pfn * bs]
        view = memoryview(buf).toreadonly()
        try:
            yield view
        finally:
            view.release()

    def _descriptors(self, first: int, end: int) -> dict[int, tuple[int, int, int]]:
        """``{frame: (offset, size, flags)}`` for the dumped frames in ``[first, end)``, read at once."""
        bs = self.header.block_size
        frames = [pfn for pfn in range(first, end) if _bit(self._dumped, pfn)]
        if not frames:
            return {}
        index = self._rank[first // (RANK_CHUNK * 8)] + _popcount_before(self._dumped, first)
        raw = self._file.pread(self._desc_at + index * DESC.size, len(frames) * DESC.size)
        if len(raw) < len(frames) * DESC.size:
            raise UnreadableError(
                self.name, first * bs, (end - first) * bs, f"page descriptors {index}.. run past the end of the dump"
            )
        return {pfn: DESC.unpack_from(raw, i * DESC.size)[:3] for i, pfn in enumerate(frames)}

    def _page(self, pfn: int, desc: tuple[int, int, int]) -> bytes:
        bs = self.header.block_size
        offset, size, flags = desc
        data = self._file.pread(offset, size) if 0 < size <= 2 * bs else b""
        if not data:
            reason = f"frame {pfn:#x}: page data ({size} bytes at {offset:#x}) is not in the dump"
            raise UnreadableError(self.name, pfn * bs, bs, reason)
        page = _decompress(flags, data, bs, self.name, pfn)
        if len(page) != bs:
            raise UnreadableError(self.name, pfn * bs, bs, f"frame {pfn:#x}: page is {len(page)} bytes, not {bs}")
        return page

    def close(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1


def _decompress(flags: int, data: bytes, block: int, name: str, pfn: int) -> bytes:
    method = next((m for bit, m in COMPRESS.items() if flags & bit), "")
    if not method:
        return data
    try:
        return _DECOMPRESSORS[method](data, block)
    except ImportError as e:
        raise UnreadableError(name, pfn * block, block, f"page compressed with {method}: install {e.name}") from e
    except Exception as e:  # a corrupt page in any library's own exception type
        detail = f"frame {pfn:#x}: {method} data does not decompress: {e}"
        raise UnreadableError(name, pfn * block, block, detail) from e


def _zlib(data: bytes, block: int) -> bytes:
    return zlib.decompressobj().decompress(data, block + 1)


def _lzo(data: bytes, block: int) -> bytes:
    import lzo

    return bytes(lzo.decompress(data, False, block))


def _snappy(data: bytes, block: int) -> bytes:
    import cramjam

    return bytes(cramjam.snappy.decompress_raw(data))


def _zstd(data: bytes, block: int) -> bytes:
    import cramjam

    return bytes(cramjam.zstd.decompress(data, output_len=block))


_DECOMPRESSORS: dict[str, Callable[[bytes, int], bytes]] = {
    "zlib": _zlib,
    "lzo": _lzo,
    "snappy": _snappy,
    "zstd": _zstd,
}


def _bit(bitmap: bytes, pfn: int) -> bool:
    i = pfn >> 3
    return i < len(bitmap) and bool(bitmap[i] >> (pfn & 7) & 1)


def _ranks(bitmap: bytes) -> list[int]:
    """Set bits before each ``RANK_CHUNK``-byte chunk of ``bitmap`` (a descriptor's index)."""
    ranks = [0]
    for at in range(0, len(bitmap), RANK_CHUNK):
        ranks.append(ranks[-1] + int.from_bytes(bitmap[at : at + RANK_CHUNK], "little").bit_count())
    return ranks


def _popcount_before(bitmap: bytes, pfn: int) -> int:
    start = (pfn // (RANK_CHUNK * 8)) * RANK_CHUNK
    chunk = int.from_bytes(bitmap[start : start + RANK_CHUNK], "little")
    return (chunk & ((1 << (pfn - start * 8)) - 1)).bit_count()


def _joined(ranges: list[PhysRange]) -> list[PhysRange]:
    out: list[PhysRange] = []
    for r in sorted(ranges):
        if out and out[-1].end == r.start:
            out[-1] = PhysRange(out[-1].start, out[-1].length + r.length)
        else:
            out.append(r)
    return out
