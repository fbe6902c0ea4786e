"""The native core's Python face: page and content hashing, zero pages, gathering pages.

``scanner._native`` (C, built from ``native/avscan_native.c`` by ``pip install``) works on any
buffer in place (memoryviews of mmaps: no copy) with the GIL released, so it runs on every core
next to libyara. Where it could not be built (no compiler), the same functions run here in pure
Python with the same results: ``zero_pages``, ``pread_runs`` and ``map_file`` (as a copy)
exactly; the XXH3 hashes through the ``xxhash`` package when it is installed. Without either,
hashes fall back to BLAKE2b and ``HASH_NAME`` says so: the result cache puts ``HASH_NAME`` in
every key, so entries made with one hash are never read with another.

Why the scan scheduler is not here: libyara is driven through yara-python on the engine's
threads (``scanner.engine``). yara-python releases the GIL for the whole scan and takes a
memoryview, so threads already scale on all cores with no copy. Linking libyara directly would
mean Debian's libyara-dev, which is 4.2.3 here while yara-python bundles 4.5.4: two libyara
versions in one process (clashing symbols) and rules compiled by one scanned by the other. What
was single-threaded and copying in Python, zero-block detection and content hashing, is here.

Functions (``buf`` is anything with the buffer protocol):

- ``zero_pages(buf, page_size) -> bytes``: one byte per page, 1 if the page is all zero (the
  last page may be short);
- ``page_hashes(buf, page_size, seed=0) -> bytes``: XXH3-64 of each page, little-endian uint64s;
- ``hash128(buf, seed=0, populate=False) -> bytes``: XXH3-128 of ``buf``, 16 bytes (canonical,
  big-endian); ``populate``: ``buf`` is a fresh mmap, map its pages in one
  ``madvise(MADV_POPULATE_READ)`` first rather than one fault per page (best effort);
- ``block_digests(buf, block, head, seed=0) -> (zero, hashes, heads)``: one pass over ``buf``
  per ``block``: the zero flag, the XXH3-128 of the block and of its first ``head`` bytes
  (16 zero bytes for a zero block): what the planner needs to key windows without reading twice;
- ``writeback(fd)``: the file's dirty pages written back and waited for (``sync_file_range``;
  the fallback uses ``fdatasync``, which also flushes the device cache: slower, same effect here);
- ``pread_runs(fd, offsets, lengths, dst) -> int``: scattered runs of a file read one after the
  other into ``dst`` in one call (a process region's pages from a guest's RAM file or a raw dump,
  gathered for YARA without a Python loop per page); returns the bytes read;
- ``map_file(fd, offset, length, holes)``: a file range whose whole hole pages read as zero
  without being touched (the kernel's zero page is mapped over them): reading a sparse guest RAM
  file on tmpfs through a plain mapping allocates every hole page it reads. The fallback reads
  the range with ``pread`` into a buffer instead (a copy, same bytes; ``pread`` of a hole does not
  allocate it);
- ``find_all(buf, needle, limit) -> list[int]``: offsets of every occurrence of ``needle`` in
  ``buf`` (overlapping ones too), the first ``limit`` of them: ``memmem`` in place, where
  ``bytes(view).find`` copied every window of a guest's RAM and searched it in the interpreter.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from types import ModuleType
from typing import Any, cast

Buffer = Any  # bytes, bytearray, memoryview, mmap: anything exporting the buffer protocol


def _load_native() -> ModuleType | None:
    try:
        from scanner import _native  # type: ignore[attr-defined]
    except ImportError:
        return None
    return cast(ModuleType, _native)


def _load_xxhash() -> ModuleType | None:
    try:
        import xxhash  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return xxhash  # type: ignore[no-any-return,unused-ignore]


_NATIVE = _load_native()
_XXHASH = _load_xxhash()

NATIVE = _NATIVE is not None
"""True when the C extension is loaded."""


def _bytes_view(buf: Buffer) -> memoryview:
    view = memoryview(buf)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class PurePython:
    """The reference implementation: what the C extension must equal (tests compare them)."""

    hash_name = "xxh3" if _XXHASH is not None else "blake2b"

    @staticmethod
    def zero_pages(buf: Buffer, page_size: int) -> bytes:
        _check_page_size(page_size)
        data = _bytes_view(buf)
        zero = bytes(page_size)
        out = bytearray()
        for start in range(0, len(data), page_size):
            page = data[start : start + page_size]
            out.append(page == zero[: len(page)])
        return bytes(out)

    @staticmethod
    def page_hashes(buf: Buffer, page_size: int, seed: int = 0) -> bytes:
        _check_page_size(page_size)
        data = _bytes_view(buf)
        pages = (data[i : i + page_size] for i in range(0, len(data), page_size))
        if _XXHASH is not None:
            return b"".join(struct.pack("<Q", _XXHASH.xxh3_64_intdigest(p, seed=seed)) for p in pages)
        key = seed.to_bytes(8, "little")
        return b"".join(hashlib.blake2b(p, digest_size=8, key=key).digest()[::-1] for p in pages)

    @staticmethod
    def hash128(buf: Buffer, seed: int = 0, populate: bool = False) -> bytes:
        if _XXHASH is not None:
            return bytes(_XXHASH.xxh3_128_digest(buf, seed=seed))
        return hashlib.blake2b(buf, digest_size=16, key=seed.to_bytes(8, "little")).digest()

    @staticmethod
    def block_digests(buf: Buffer, block: int, head: int, seed: int = 0) -> tuple[bytes, bytes, bytes]:
        _check_page_size(block)
        if head < 0:
            raise ValueError("head must not be negative")
        data = _bytes_view(buf)
        zero = PurePython.zero_pages(data, block)
        hashes, heads = bytearray(), bytearray()
        for i, is_zero in enumerate(zero):
            piece = data[i * block : (i + 1) * block]
            hashes += bytes(16) if is_zero else PurePython.hash128(piece, seed)
            heads += bytes(16) if is_zero else PurePython.hash128(piece[:head], seed)
        return zero, bytes(hashes), bytes(heads)

    @staticmethod
    def writeback(fd: int) -> None:
        """``fdatasync``: the same cleaning of dirty pages, plus a device flush the C version spares."""
        os.fdatasync(fd)

    @staticmethod
    def pread_runs(fd: int, offsets: Buffer, lengths: Buffer, dst: Buffer) -> int:
        offs, lens = bytes(offsets), bytes(lengths)
        if len(offs) % 8 or len(lens) != len(offs):
            raise ValueError("offsets and lengths must be equal arrays of little-endian uint64")
        count = len(offs) // 8
        runs = list(zip(struct.unpack(f"<{count}Q", offs), struct.unpack(f"<{count}Q", lens), strict=True))
        out = memoryview(dst).cast("B")
        if sum(n for _, n in runs) > len(out):
            raise ValueError("a run does not fit dst or the file offset range")
        position = 0
        for off, n in runs:
            got = 0
            while got < n:
                r = os.preadv(fd, [out[position + got : position + n]], off + got)
                if r <= 0:
                    raise OSError(errno.EIO, f"file ends at offset {off + got}")
                got += r
            position += n
        return position

    @staticmethod
    def find_all(buf: Buffer, needle: bytes, limit: int) -> list[int]:
        if not needle or limit < 0:
            raise ValueError("needle must not be empty and limit not negative")
        data = bytes(_bytes_view(buf))
        out: list[int] = []
        at = data.find(needle)
        while at >= 0 and len(out) < limit:
            out.append(at)
            at = data.find(needle, at + 1)
        return out

    @staticmethod
    def map_file(fd: int, offset: int, length: int, holes: Any) -> Buffer:
        """A copy instead of a mapping, read with ``pread``, which returns a hole's zeros without
        allocating it (unlike a read through a mapping); ``holes`` is not needed for that."""
        if offset < 0 or length <= 0:
            raise ValueError("map_file: offset must be >= 0 and length > 0")
        size = os.fstat(fd).st_size
        if offset + length > size:
            raise ValueError(f"map_file: range ends at {offset + length}, past the end of the file ({size} bytes)")
        out = bytearray(length)
        view, position = memoryview(out), offset
        while position < offset + length:
            got = os.preadv(fd, [view[position - offset :]], position)
            if got <= 0:
                raise OSError(errno.EIO, f"file ends at {position}")
            position += got
        return out


def _check_page_size(page_size: int) -> None:
    if page_size <= 0:
        raise ValueError("page_size must be positive")


_impl: Any = _NATIVE if _NATIVE is not None else PurePython
HASH_NAME = "xxh3" if _NATIVE is not None else PurePython.hash_name
"""The content hash in use ("xxh3", or "blake2b" without the extension and the xxhash package)."""


def zero_pages(buf: Buffer, page_size: int) -> bytes:
    return cast(bytes, _impl.zero_pages(buf, page_size))


def page_hashes(buf: Buffer, page_size: int, seed: int = 0) -> bytes:
    return cast(bytes, _impl.page_hashes(buf, page_size, seed=seed))


def hash128(buf: Buffer, seed: int = 0, populate: bool = False) -> bytes:
    return cast(bytes, _impl.hash128(buf, seed=seed, populate=populate))


def block_digests(buf: Buffer, block: int, head: int, seed: int = 0) -> tuple[bytes, bytes, bytes]:
    return cast(tuple[bytes, bytes, bytes], _impl.block_digests(buf, block, head, seed=seed))


def writeback(fd: int) -> None:
    """Write the file's dirty pages back and wait; raises OSError. Written-back pages are
    write-protected in every mapping, so the next write through one faults and moves the
    file's ctime (``scanner.targets.identity``)."""
    _impl.writeback(fd)


def pread_runs(fd: int, offsets: Buffer, lengths: Buffer, dst: Buffer) -> int:
    """Read run ``i`` (file offset ``offsets[i]``, ``lengths[i]`` bytes: little-endian uint64
    arrays) of ``fd`` into ``dst``, one after the other; returns the bytes read. Raises OSError
    (a read error, or the file ends inside a run) or ValueError (malformed arrays, runs longer than
    ``dst``)."""
    return cast(int, _impl.pread_runs(fd, offsets, lengths, dst))


def map_file(fd: int, offset: int, length: int, holes: Any) -> Buffer:
    """``length`` bytes of file ``fd`` at ``offset`` where whole pages inside ``holes`` ((start,
    end) file offsets) read as zero without being touched: a mapping (C) or a copy (fallback).
    Close it with ``close()`` when it has one; raises OSError or ValueError."""
    return _impl.map_file(fd, offset, length, holes)


def find_all(buf: Buffer, needle: bytes, limit: int) -> list[int]:
    """Offsets of ``needle`` in ``buf`` (overlapping occurrences too), at most ``limit``, in order."""
    return cast(list[int], _impl.find_all(buf, needle, limit))


def repeated_pages(hashes: bytes) -> dict[int, int]:
    """``{page index: index of the first page with the same hash}`` for every repeat after the
    first (from :func:`page_hashes`). Equal hashes are candidates only: compare the bytes before
    treating two pages as the same."""
    first: dict[bytes, int] = {}
    out: dict[int, int] = {}
    for i in range(len(hashes) // 8):
        h = hashes[i * 8 : i * 8 + 8]
        j = first.setdefault(h, i)
        if j != i:
            out[i] = j
    return out
