"""A profile's inputs from a kernel image on disk (``--kernel``): a bzImage or a vmlinux ELF.

A bzImage's setup header (``HdrS``) gives the compressed payload (``payload_offset`` and
``payload_length`` at 0x248); the payload is gzip, xz, bzip2, LZMA (Python's standard library),
zstd (the ``zstandard`` package) or LZ4 legacy frames (the ``lz4`` package when installed, else
the small pure-Python decoder here, slower but dependency-free). From the vmlinux ELF come the
``.BTF`` section and the ``Linux version`` banner.
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import lzma
import re
import struct
from pathlib import Path
from typing import Protocol

from scanner.guestos.btf import BtfError
from scanner.guestos.linux.locate import preferred_banner

MAX_VMLINUX = 512 << 20
LZ4_LEGACY = 0x184C2102
LZ4_BLOCK = 8 << 20
BANNER = re.compile(rb"Linux version [ -~]{8,400}\n\0")
MAX_BANNERS = 8  # the weak linux_banner, the real one, the uts copies


def btf_from_image(path: Path) -> tuple[bytes, str]:
    """``(BTF blob, banner)`` of the kernel image at ``path``; BtfError saying what is missing."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BtfError(f"cannot read kernel image {path}: {e.strerror}") from e
    vmlinux = data if data[:4] == b"\x7fELF" else vmlinux_from_bzimage(data)
    blob = elf_section(vmlinux, ".BTF")
    found = itertools.islice(BANNER.finditer(vmlinux), MAX_BANNERS)
    return blob, preferred_banner(m.group()[:-2].decode("ascii") for m in found)


def vmlinux_from_bzimage(data: bytes) -> bytes:
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        raise BtfError("not a bzImage (no HdrS setup header) and not an ELF vmlinux")
    setup_sects = data[0x1F1] or 4
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return decompress(data[start : start + length])


def decompress(payload: bytes) -> bytes:
    """The vmlinux inside a bzImage payload, by the payload's magic."""
    try:
        if payload[:2] == b"\x1f\x8b":
            return _bounded(gzip.decompress(payload))
        if payload[:6] == b"\xfd7zXZ\x00":
            return _one_stream(lzma.LZMADecompressor(lzma.FORMAT_XZ), payload)
        if payload[:3] == b"BZh":
            return _one_stream(bz2.BZ2Decompressor(), payload)
        if payload[:3] == b"\x5d\x00\x00":
            return _one_stream(lzma.LZMADecompressor(lzma.FORMAT_ALONE), payload)
        if payload[:4] == b"\x28\xb5\x2f\xfd":
            return _zstd(payload)
        if struct.unpack_from("<I", payload)[0] == LZ4_LEGACY:
            return lz4_legacy(payload)
    except (OSError, lzma.LZMAError, EOFError, ValueError) as e:
        raise BtfError(f"kernel payload does not decompress: {e}") from e
    raise BtfError(f"unknown kernel payload compression (magic {payload[:6].hex()})")


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


def _one_stream(decompressor: _Decompressor, payload: bytes) -> bytes:
    """The first compressed stream of ``payload``, at most :data:`MAX_VMLINUX` bytes.

    The kernel build appends the vmlinux size (4 bytes, little-endian) after xz, LZMA and bzip2
    streams (``size_append``): what follows the stream is not another stream, and is ignored.
    """
    data = decompressor.decompress(payload, MAX_VMLINUX + 1)
    if not decompressor.eof:
        _bounded(data)
        raise BtfError("kernel payload does not decompress: the compressed stream is cut short")
    return _bounded(data)


def _bounded(data: bytes) -> bytes:
    if len(data) > MAX_VMLINUX:
        raise BtfError(f"decompressed kernel larger than {MAX_VMLINUX} bytes")
    return data


def _zstd(payload: bytes) -> bytes:
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError as e:
        raise BtfError("zstd kernel: unavailable: install zstandard") from e
    out = zstandard.ZstdDecompressor().decompressobj().decompress(payload)
    return _bounded(bytes(out))


def lz4_legacy(payload: bytes) -> bytes:
    """Decompress LZ4 legacy frames (magic, then blocks: u32 compressed size + block)."""
    try:
        import lz4.block  # type: ignore[import-not-found]

        block = lz4.block.decompress
    except ImportError:
        block = None
    pos, out = 4, bytearray()
    while pos + 4 <= len(payload):
        (size,) = struct.unpack_from("<I", payload, pos)
        if size == LZ4_LEGACY:  # concatenated frames
            pos += 4
            continue
        pos += 4
        if size == 0 or pos + size > len(payload):
            break  # the kernel appends its size after the last block
        chunk = payload[pos : pos + size]
        out += block(chunk, uncompressed_size=LZ4_BLOCK) if block else lz4_block(chunk, LZ4_BLOCK)
        pos += size
        if len(out) > MAX_VMLINUX:
            raise BtfError(f"decompressed kernel larger than {MAX_VMLINUX} bytes")
    return bytes(out)


def lz4_block(src: bytes, limit: int) -> bytes:
    """One LZ4 block (pure Python): sequences of literals then a back-reference."""
    out = bytearray()
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        lit = token >> 4
        if lit == 15:
            while True:
                b = src[i]
                i += 1
                lit += b
                if b != 255:
                    break
        out += src[i : i + lit]
        i += lit
        if i >= n:
            break
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        mlen = token & 15
        if mlen == 15:
            while True:
                b = src[i]
                i += 1
                mlen += b
                if b != 255:
                    break
        mlen += 4
        if offset == 0 or offset > len(out):
            raise ValueError(f"lz4: bad match offset {offset} at {i}")
        start = len(out) - offset
        if mlen <= offset:
            out += out[start : start + mlen]
        else:
            pattern = bytes(out[start:])
            reps, rest = divmod(mlen, offset)
            out += pattern * reps + pattern[:rest]
        if len(out) > limit:
            raise ValueError("lz4: block larger than its limit")
    return bytes(out)


def elf_section(elf: bytes, name: str) -> bytes:
    """The bytes of section ``name`` of a 64-bit little-endian ELF."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise BtfError("vmlinux is not a 64-bit little-endian ELF")
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    if shoff + shnum * shentsize > len(elf) or shstrndx >= shnum:
        raise BtfError("vmlinux section table is outside the file")

    def header(i: int) -> tuple[int, int, int]:
        (name_off,) = struct.unpack_from("<I", elf, shoff + i * shentsize)
        offset, size = struct.unpack_from("<QQ", elf, shoff + i * shentsize + 0x18)
        return name_off, offset, size

    _, str_off, _ = header(shstrndx)
    for i in range(shnum):
        name_off, offset, size = header(i)
        end = elf.find(b"\0", str_off + name_off)
        if elf[str_off + name_off : end] == name.encode():
            if offset + size > len(elf):
                raise BtfError(f"vmlinux section {name} runs past the file")
            return elf[offset : offset + size]
    raise BtfError(f"vmlinux has no {name} section")
