"""BTF parsing on synthetic blobs: layouts, anonymous members, bitfields, arrays, and malformed input."""

from __future__ import annotations

import struct

import pytest

from scanner.guestos.btf import BtfError, Kind, blob_length, parse_btf


class BlobBuilder:
    """Builds a BTF blob type by type (ids from 1), the way the kernel lays it out."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.types = bytearray()
        self.count = 0

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, name: str, kind: Kind, vlen: int, size_or_type: int, extra: bytes = b"", kflag: bool = False) -> int:
        info = vlen | (int(kind) << 24) | (int(kflag) << 31)
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + extra
        self.count += 1
        return self.count

    def int_(self, name: str, size: int, signed: bool = False) -> int:
        return self.add(name, Kind.INT, 0, size, struct.pack("<I", (int(signed) << 24) | size * 8))

    def struct_(
        self, name: str, size: int, members: list[tuple[str, int, int]], union: bool = False, kflag: bool = False
    ) -> int:
        body = b"".join(struct.pack("<III", self.s(n), t, off) for n, t, off in members)
        return self.add(name, Kind.UNION if union else Kind.STRUCT, len(members), size, body, kflag)

    def blob(self) -> bytes:
        header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        return header + bytes(self.types) + bytes(self.strings)


def sample() -> bytes:
    b = BlobBuilder()
    u64 = b.int_("long unsigned int", 8)  # 1
    i32 = b.int_("int", 4, signed=True)  # 2
    char = b.int_("char", 1)  # 3
    ptr = b.add("", Kind.PTR, 0, 0)  # 4: void *
    arr = b.add("", Kind.ARRAY, 0, 0, struct.pack("<III", char, i32, 16))  # 5: char[16]
    lh = b.struct_("list_head", 16, [("next", ptr, 0), ("prev", ptr, 64)])  # 6
    anon = b.struct_("", 8, [("a", i32, 0), ("b", u64, 0)], union=True)  # 7: union { a; b }
    pid_t = b.add("pid_t", Kind.TYPEDEF, 0, i32)  # 8
    const_lh = b.add("", Kind.CONST, 0, lh)  # 9
    b.struct_(
        "task_struct",
        64,
        [("state", u64, 0), ("", anon, 64), ("tasks", const_lh, 128), ("pid", pid_t, 256), ("comm", arr, 288)],
    )  # 10
    b.struct_("flags", 4, [("lo", i32, (3 << 24) | 0), ("hi", i32, (5 << 24) | 3)], kflag=True)  # 11
    return b.blob()


def test_struct_layout_with_anonymous_members_typedefs_and_arrays() -> None:
    btf = parse_btf(sample())
    assert btf.offset("task_struct", "tasks") == 16
    assert btf.offset("task_struct", "tasks.prev") == 24
    assert btf.offset("task_struct", "pid") == 32
    assert btf.offset("task_struct", "b") == 8  # through the anonymous union
    comm = btf.member(btf.find("task_struct"), "comm")
    assert btf.get(comm.type_id).count == 16
    assert btf.sizeof(comm.type_id) == 16
    assert btf.sizeof(btf.find("list_head")) == 16
    assert btf.has_member("task_struct", "pid") and not btf.has_member("task_struct", "tgid")


def test_bitfields_keep_bit_offset_and_size() -> None:
    btf = parse_btf(sample())
    hi = btf.member(btf.find("flags"), "hi")
    assert (hi.bit_offset, hi.bit_size) == (3, 5)
    with pytest.raises(BtfError, match="bitfield"):
        btf.offset("flags", "hi")


def test_blob_length_reads_the_header() -> None:
    blob = sample()
    assert blob_length(blob[:24]) == len(blob)
    assert blob_length(b"\x9f\xeb\x01\x00" + bytes(20)) == 0


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:30],  # truncated
        lambda b: b"\x00\x00" + b[2:],  # bad magic
        lambda b: b[:24] + b[24:36].replace(b[24:28], struct.pack("<I", 1 << 30), 1) + b[36:],  # name past strings
        lambda b: b[:28] + struct.pack("<I", 31 << 24) + b[32:],  # unknown kind
    ],
)
def test_malformed_blobs_raise_btf_error(mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BtfError):
        parse_btf(mutate(sample()))


def test_missing_names_are_btf_errors() -> None:
    btf = parse_btf(sample())
    with pytest.raises(BtfError, match="no struct"):
        btf.find("mm_struct")
    with pytest.raises(BtfError, match="no member"):
        btf.offset("task_struct", "mm")
