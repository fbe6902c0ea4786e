"""BPF Type Format (BTF): the kernel's own description of its types, parsed from raw bytes.

The format is the kernel's ``Documentation/bpf/btf.rst``: a 24-byte header (magic ``0xeb9f``,
version 1), a type section of variable-length records, and a string section. Type ids start at
1 (0 is ``void``). Only what profiles need is interpreted: names, sizes, struct and union members
(with bit offsets), arrays, pointers, qualifiers and typedefs, enums and ints.

Contract: :func:`parse_btf` validates every length and offset against the blob and raises
:class:`BtfError` (never ``struct.error`` or ``IndexError``) on a malformed blob; counts are
bounded by :data:`MAX_TYPES`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from scanner.errors import ScannerError

MAGIC = 0xEB9F
HEADER = struct.Struct("<HBBIIIII")
MAX_TYPES = 1 << 20
MAX_SIZE = 64 << 20


class BtfError(ScannerError):
    """A BTF blob is malformed; says where."""

    code = "INVALID_ARGUMENT"


class Kind(enum.IntEnum):
    VOID = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


QUALIFIERS = {Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG}
INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4


@dataclass(frozen=True)
class Member:
    """A struct/union member: ``bit_offset`` from the start of the parent, ``bit_size`` 0 if not a bitfield."""

    name: str
    type_id: int
    bit_offset: int
    bit_size: int = 0


@dataclass
class BtfType:
    kind: Kind
    name: str
    size: int = 0  # INT, STRUCT, UNION, ENUM, DATASEC, FLOAT
    ref: int = 0  # PTR, TYPEDEF, qualifiers, FUNC, VAR: the referenced type
    encoding: int = 0  # INT: INT_SIGNED | INT_CHAR | INT_BOOL
    bits: int = 0  # INT: number of bits
    elem: int = 0  # ARRAY: element type
    count: int = 0  # ARRAY: number of elements
    members: tuple[Member, ...] = ()
    enumerators: tuple[tuple[str, int], ...] = ()
    fwd_union: bool = False  # FWD: a forward-declared union


@dataclass
class Btf:
    """Parsed types (index = type id) and a name index over structs, unions, enums and typedefs."""

    types: list[BtfType]
    by_name: dict[tuple[Kind, str], int] = field(default_factory=dict)

    def get(self, type_id: int) -> BtfType:
        if not 0 <= type_id < len(self.types):
            raise BtfError(f"BTF: type id {type_id} out of range (have {len(self.types)})")
        return self.types[type_id]

    def find(self, name: str, kind: Kind = Kind.STRUCT) -> int:
        try:
            return self.by_name[(kind, name)]
        except KeyError:
            raise BtfError(f"BTF: no {kind.name.lower()} {name!r}") from None

    def resolve(self, type_id: int, limit: int = 32) -> int:
        """Strip typedefs and qualifiers (bounded: a loop in the blob is an error)."""
        for _ in range(limit):
            t = self.get(type_id)
            if t.kind not in QUALIFIERS:
                return type_id
            type_id = t.ref
        raise BtfError(f"BTF: qualifier chain too long at type {type_id}")

    def sizeof(self, type_id: int, depth: int = 0) -> int:
        if depth > 32:
            raise BtfError(f"BTF: type {type_id} nests too deep")
        t = self.get(self.resolve(type_id))
        if t.kind is Kind.PTR:
            return 8
        if t.kind is Kind.ARRAY:
            return t.count * self.sizeof(t.elem, depth + 1)
        return t.size

    def members(self, type_id: int) -> Iterator[Member]:
        """Members of a struct/union with anonymous members flattened (offsets made absolute)."""
        yield from self._members(type_id, 0, 0)

    def _members(self, type_id: int, base: int, depth: int) -> Iterator[Member]:
        if depth > 16:
            raise BtfError(f"BTF: anonymous members nest too deep at type {type_id}")
        t = self.get(self.resolve(type_id))
        for m in t.members:
            if not m.name:
                inner = self.get(self.resolve(m.type_id))
                if inner.kind in (Kind.STRUCT, Kind.UNION):
                    yield from self._members(m.type_id, base + m.bit_offset, depth + 1)
                continue
            yield Member(m.name, m.type_id, base + m.bit_offset, m.bit_size)

    def member(self, type_id: int, name: str) -> Member:
        for m in self.members(type_id):
            if m.name == name:
                return m
        raise BtfError(f"BTF: {self.get(type_id).name or type_id} has no member {name!r}")

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of ``path`` (``"a.b.c"``, through nested structs) in struct ``struct_name``."""
        type_id = self.find(struct_name)
        total = 0
        for part in path.split("."):
            m = self.member(type_id, part)
            if m.bit_offset % 8:
                raise BtfError(f"BTF: {struct_name}.{path} is a bitfield")
            total += m.bit_offset // 8
            type_id = m.type_id
        return total

    def has_member(self, struct_name: str, name: str) -> bool:
        try:
            self.member(self.find(struct_name), name)
        except BtfError:
            return False
        return True


def parse_btf(blob: bytes | memoryview) -> Btf:
    """Parse a whole BTF blob (header, types, strings)."""
    data = bytes(blob)
    if len(data) < HEADER.size:
        raise BtfError("BTF: shorter than its header")
    magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(data)
    if magic != MAGIC or version != 1 or hdr_len < HEADER.size:
        raise BtfError(f"BTF: bad magic/version/header ({magic:#x}, {version}, {hdr_len})")
    end = hdr_len + max(type_off + type_len, str_off + str_len)
    if end > len(data) or end > MAX_SIZE:
        raise BtfError(f"BTF: sections end at {end}, blob has {len(data)} bytes")
    strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
    types = _parse_types(data[hdr_len + type_off : hdr_len + type_off + type_len], strings)
    btf = Btf(types)
    for i, t in enumerate(types):
        if t.name and t.kind in (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.TYPEDEF, Kind.INT):
            btf.by_name.setdefault((t.kind, t.name), i)
    return btf


def blob_length(header: bytes | memoryview) -> int:
    """Total length of the BTF blob whose header starts ``header`` (0 if it is not a BTF header)."""
    if len(header) < HEADER.size:
        return 0
    magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(header)
    if magic != MAGIC or version != 1 or hdr_len != HEADER.size or type_off != 0:
        return 0
    if str_off < type_len or not 0 < type_len < MAX_SIZE or not 0 < str_len < MAX_SIZE:
        return 0
    return int(hdr_len + str_off + str_len)


def _string(strings: bytes, offset: int) -> str:
    if offset >= len(strings):
        raise BtfError(f"BTF: string offset {offset} outside the string section ({len(strings)})")
    end = strings.find(b"\0", offset)
    return strings[offset : end if end >= 0 else len(strings)].decode("utf-8", "replace")


def _parse_types(data: bytes, strings: bytes) -> list[BtfType]:  # noqa: PLR0912 - one branch per BTF kind
    types = [BtfType(Kind.VOID, "void")]
    pos = 0
    u32 = struct.Struct("<I")
    while pos < len(data):
        if len(types) > MAX_TYPES:
            raise BtfError(f"BTF: more than {MAX_TYPES} types")
        if pos + 12 > len(data):
            raise BtfError(f"BTF: truncated type record at {pos}")
        name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
        pos += 12
        vlen, kind_no, kflag = info & 0xFFFF, (info >> 24) & 0x1F, bool(info >> 31)
        try:
            kind = Kind(kind_no)
        except ValueError:
            raise BtfError(f"BTF: unknown kind {kind_no} at type {len(types)}") from None
        t = BtfType(kind, _string(strings, name_off))
        extra = _EXTRA.get(kind, (0, 0))
        need = extra[0] + extra[1] * vlen
        if pos + need > len(data):
            raise BtfError(f"BTF: type {len(types)} record runs past the type section")
        if kind is Kind.INT:
            (word,) = u32.unpack_from(data, pos)
            t.size, t.encoding, t.bits = size_or_type, (word >> 24) & 0xF, word & 0xFF
        elif kind is Kind.ARRAY:
            t.elem, _index, t.count = struct.unpack_from("<III", data, pos)
        elif kind in (Kind.STRUCT, Kind.UNION):
            t.size = size_or_type
            t.members = tuple(_member(data, pos + 12 * i, strings, kflag) for i in range(vlen))
        elif kind is Kind.ENUM:
            t.size = size_or_type
            t.enumerators = tuple(
                (_string(strings, n), v) for n, v in (struct.unpack_from("<Ii", data, pos + 8 * i) for i in range(vlen))
            )
        elif kind is Kind.ENUM64:
            t.size = size_or_type
            vals = (struct.unpack_from("<IIi", data, pos + 12 * i) for i in range(vlen))
            t.enumerators = tuple((_string(strings, n), (hi << 32) | lo) for n, lo, hi in vals)
        elif kind in (Kind.DATASEC, Kind.FLOAT):
            t.size = size_or_type
        elif kind is Kind.FWD:
            t.fwd_union = kflag
        else:
            t.ref = size_or_type
        pos += need
        types.append(t)
    return types


def _member(data: bytes, pos: int, strings: bytes, kflag: bool) -> Member:
    name_off, type_id, offset = struct.unpack_from("<III", data, pos)
    if kflag:
        return Member(_string(strings, name_off), type_id, offset & 0xFFFFFF, offset >> 24)
    return Member(_string(strings, name_off), type_id, offset)


# Bytes after the common 12-byte record: (fixed, per vlen item).
_EXTRA: dict[Kind, tuple[int, int]] = {
    Kind.INT: (4, 0),
    Kind.ARRAY: (12, 0),
    Kind.STRUCT: (0, 12),
    Kind.UNION: (0, 12),
    Kind.ENUM: (0, 8),
    Kind.FUNC_PROTO: (0, 8),
    Kind.VAR: (4, 0),
    Kind.DATASEC: (0, 12),
    Kind.DECL_TAG: (4, 0),
    Kind.ENUM64: (0, 12),
}
