"""Test tools for kdump files: an independent reader (libkdumpfile) and a page re-compressor.

``oracle_digests`` runs Debian's ``python3-libkdumpfile`` (the system Python's binding of
libkdumpfile, a reader written independently of this project) in a subprocess and returns the
SHA-256 of each MiB it reads, or ``None`` for a MiB holding an excluded page.

``recompress`` rewrites a plain (not flattened) kdump made by QEMU/makedumpfile with every page
compressed by another method (lzo, snappy, zstd): the header, bitmaps and descriptor order stay
as the real writer made them; only the page data and the descriptors' offsets, sizes and flags
change. Debian's QEMU writes only zlib and Debian's makedumpfile has no snappy or zstd, so this is
how those methods get real structure around them.
"""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path

import cramjam
import lzo

SYSTEM_PYTHON = "/usr/bin/python3"
DESC = struct.Struct("<qIIQ")
FLAGS = {"zlib": 0x01, "lzo": 0x02, "snappy": 0x04, "zstd": 0x20}

_ORACLE = """
import hashlib, json, sys, kdumpfile
k = kdumpfile.kdumpfile(sys.argv[1])
out = []
for start, length in json.loads(sys.argv[2]):
    for a in range(start, start + length, 1 << 20):
        n = min(1 << 20, start + length - a)
        try:
            out.append(hashlib.sha256(k.read(kdumpfile.KDUMP_MACHPHYSADDR, a, n)).hexdigest())
        except kdumpfile.exceptions.NoDataException:
            out.append(None)
print(json.dumps(out))
"""


def oracle_digests(path: Path, ranges: list[tuple[int, int]]) -> list[str | None]:
    """SHA-256 of each MiB of ``ranges`` as libkdumpfile reads ``path``."""
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", _ORACLE, str(path), json.dumps(ranges)], capture_output=True, text=True, check=True
    )
    return list(json.loads(done.stdout))


def _geometry(data: bytes) -> tuple[int, int, int]:
    """Block size, where the descriptors start, and how many there are (set bits of bitmap 2)."""
    block_size, sub_hdr_size, bitmap_blocks = struct.unpack_from("<iiI", data, 428)
    half = bitmap_blocks * block_size // 2
    at = block_size * (1 + sub_hdr_size)
    dumped = data[at + half : at + 2 * half]
    count = sum(bin(b).count("1") for b in dumped)
    return block_size, block_size * (1 + sub_hdr_size + bitmap_blocks), count


def recompress(src: Path, dst: Path, method: str) -> None:
    """``src`` (a plain kdump) with every page compressed by ``method`` instead."""
    data = src.read_bytes()
    block, desc_at, count = _geometry(data)
    out = bytearray(data[: desc_at + count * DESC.size])
    for i in range(count):
        offset, size, flags, page_flags = DESC.unpack_from(data, desc_at + i * DESC.size)
        page = data[offset : offset + size]
        page = zlib.decompress(page) if flags & FLAGS["zlib"] else page
        assert len(page) == block
        packed = {
            "lzo": lambda p: lzo.compress(p, 1, False),
            "snappy": lambda p: bytes(cramjam.snappy.compress_raw(p)),
            "zstd": lambda p: bytes(cramjam.zstd.compress(p)),
        }[method](page)
        flag = FLAGS[method]
        if len(packed) >= block:  # as makedumpfile does: a page that does not shrink is stored raw
            packed, flag = page, 0
        DESC.pack_into(out, desc_at + i * DESC.size, len(out), len(packed), flag, page_flags)
        out += packed
    dst.write_bytes(bytes(out))


def descriptor(path: Path, index: int) -> tuple[int, int, int]:
    """Offset, size and flags of page descriptor ``index`` of a plain kdump."""
    data = path.read_bytes()
    _, desc_at, _ = _geometry(data)
    offset, size, flags, _ = DESC.unpack_from(data, desc_at + index * DESC.size)
    return offset, size, flags
