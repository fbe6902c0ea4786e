"""The kernel's own symbol table (kallsyms), parsed from its memory: a second source of symbols.

Linux 6.1 (``CONFIG_KALLSYMS_BASE_RELATIVE``, x86-64 ``ABSOLUTE_PERCPU``) keeps, in this order and
each 8-byte aligned in ``.rodata``: ``kallsyms_offsets`` (s32 per symbol),
``kallsyms_relative_base`` (u64), ``kallsyms_num_syms`` (u32), ``kallsyms_names`` (per symbol a
length, one byte or two when above 127, then token numbers), ``kallsyms_markers`` (u32 offset into
the names of every 256th symbol), ``kallsyms_token_table`` (256 NUL-terminated tokens) and
``kallsyms_token_index`` (u16 offset of each token). The token table is found by its tokens
``"0"``..``"9"`` (digits are used in names, so they stay single-character tokens at their own
codes); everything before it is found backwards and checked: the token index must point at each
token, the markers must rise from 0 and agree with the names, every name must decode.

Bounded: the search reads at most :data:`MAX_IMAGE` bytes of the kernel image mapping; a table
that fails a check raises :class:`~scanner.guestos.problems.WalkError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from scanner.errors import UnreadableError
from scanner.guestos.linux.memory import VirtualMemory
from scanner.guestos.linux.paging import PAGE
from scanner.guestos.problems import WalkError

MAX_IMAGE = 96 << 20
CHUNK = 1 << 20  # memory.MAX_READ
DIGITS = b"".join(bytes([c]) + b"\0" for c in b"0123456789")
MAX_SYMS = 1 << 21


@dataclass(frozen=True)
class Kallsyms:
    """Symbol name -> address (the first of duplicate names), and the type letter of each."""

    addresses: dict[str, int]
    types: dict[str, str]

    def __len__(self) -> int:
        return len(self.addresses)


def _image(kmem: VirtualMemory, text: int) -> bytes:
    """The kernel image mapping from ``text``, unmapped pages as zeros (the text/rodata gap is freed)."""
    out = bytearray()
    while len(out) < MAX_IMAGE:
        try:
            out += kmem.read(text + len(out), CHUNK)
        except (WalkError, UnreadableError):
            for _ in range(CHUNK // PAGE):
                try:
                    out += kmem.read(text + len(out), PAGE)
                except (WalkError, UnreadableError):
                    out += bytes(PAGE)
    return bytes(out)


def read_kallsyms(kmem: VirtualMemory, text: int) -> Kallsyms:
    """The kallsyms of the kernel whose image starts at virtual ``text`` (raises WalkError)."""
    image = _image(kmem, text)
    at = image.find(DIGITS)
    while at >= 0:
        try:
            return _parse(image, at)
        except (WalkError, IndexError, struct.error, UnicodeDecodeError):
            at = image.find(DIGITS, at + 1)
    raise WalkError("no kallsyms token table in the kernel image")


def _tokens(image: bytes, zero: int) -> tuple[int, list[bytes], int]:
    """(table start, the 256 tokens, table end) around token "0" at ``zero``."""
    start = zero
    for _ in range(ord("0")):
        start = image.rindex(b"\0", 0, start - 1) + 1
    if start % 8:
        raise WalkError("kallsyms token table is not 8-byte aligned")
    tokens, pos = [], start
    for _ in range(256):
        end = image.index(b"\0", pos)
        if end == pos:
            raise WalkError("empty kallsyms token")
        tokens.append(image[pos:end])
        pos = end + 1
    index_at = (pos + 7) & ~7
    offsets = struct.unpack_from("<256H", image, index_at)
    expected, off = [], 0
    for token in tokens:
        expected.append(off)
        off += len(token) + 1
    if list(offsets) != expected:
        raise WalkError("kallsyms token index does not point at the tokens")
    return start, tokens, pos


def _markers(image: bytes, table: int) -> tuple[int, list[int]]:
    """(start, values) of kallsyms_markers: the nearest run before the token table of u32 values
    rising from 0 by plausible steps (256 names each). Between it and the table there may be
    ``kallsyms_seqs_of_names`` (3 bytes per symbol, in later 6.1 stable kernels)."""
    lowest = max(0, table - 3 * MAX_SYMS - 4 * (MAX_SYMS // 256) - 64)
    pos = table - 4 & ~3
    while pos >= lowest:
        if image[pos : pos + 4] == b"\0\0\0\0":
            values = _rising(image, pos, table)
            if len(values) >= 8:
                return pos, values
        pos -= 4
    raise WalkError("kallsyms markers not found before the token table")


def _rising(image: bytes, pos: int, limit: int) -> list[int]:
    values = [0]
    at = pos + 4
    while at + 4 <= limit:
        (value,) = struct.unpack_from("<I", image, at)
        if not 256 * 2 <= value - values[-1] <= 256 * 512:
            break
        values.append(value)
        at += 4
    return values


def _parse(image: bytes, zero: int) -> Kallsyms:
    table, tokens, _ = _tokens(image, zero)
    markers_at, markers = _markers(image, table)
    count_max = len(markers) * 256
    # names end before the markers; num_syms is 8 bytes before the names
    lowest = max(8, markers_at - markers[-1] - 256 * 2 * 258 - 16)
    for names_at in range(markers_at - markers[-1] & ~7, lowest, -8):
        (count,) = struct.unpack_from("<I", image, names_at - 8)
        if count_max - 256 < count <= count_max:
            try:
                return _decode(image, names_at, count, markers, markers_at, tokens)
            except WalkError:
                continue
    raise WalkError("kallsyms names not found before the markers")


def _decode(
    image: bytes, names_at: int, count: int, markers: list[int], markers_at: int, tokens: list[bytes]
) -> Kallsyms:
    pos, names = names_at, []
    for i in range(count):
        if i % 256 == 0 and pos - names_at != markers[i // 256]:
            raise WalkError("kallsyms marker does not match the names")
        length = image[pos]
        pos += 1
        if length & 0x80:
            length = (length & 0x7F) | image[pos] << 7
            pos += 1
        if not length or pos + length > markers_at:
            raise WalkError("kallsyms name runs past the markers")
        names.append(b"".join(tokens[b] for b in image[pos : pos + length]).decode("ascii"))
        pos += length
    base_at = names_at - 16
    (relative_base,) = struct.unpack_from("<Q", image, base_at)
    offsets_at = (base_at - 4 * count) & ~7
    offsets = struct.unpack_from(f"<{count}i", image, offsets_at)
    addresses: dict[str, int] = {}
    types: dict[str, str] = {}
    for name, offset in zip(names, offsets, strict=True):
        address = offset if offset >= 0 else relative_base - 1 - offset
        addresses.setdefault(name[1:], address)
        types.setdefault(name[1:], name[:1])
    return Kallsyms(addresses, types)
