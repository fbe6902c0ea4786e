"""NTFS images with what Windows puts on real volumes, made by ``mkntfs`` + ``ntfs-3g`` (FUSE).

Alternate data streams are written through ntfs-3g's ``streams_interface=windows`` (``file:stream``
names), reparse points through its ``system.ntfs_reparse_data`` extended attribute (the raw
``REPARSE_DATA_BUFFER``), WOF files as Windows lays them out (a sparse default stream of the
uncompressed size, the chunks in a ``WofCompressedData`` stream, a WOF reparse point), and a
stale tail past the initialized size and an EFS flag by patching that one field of the finished
image's MFT record (located with The Sleuth Kit's ``ifind``). Nothing here uses the scanner's own parsers.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.disk.images import run
from tests.support.samples import eicar, marker

MARK = marker("DISK")
TAG_MOUNT_POINT, TAG_SYMLINK, TAG_DEDUP, TAG_WOF = 0xA0000003, 0xA000000C, 0x80000013, 0x80000017
TAG_CLOUD, TAG_VENDOR = 0x9000001A, 0x80000099
WOF_XPRESS4K, WOF_LZX = 0, 1
STALE_FILE, STALE_SIZE, STALE_VALID, STALE_MARK_AT = "stale.bin", 12000, 4096, 6000


@contextmanager
def mounted(image: Path, *options: str) -> Iterator[Path]:
    """``image`` mounted by ntfs-3g with ``options`` (``ro``, ``streams_interface=windows``...)."""
    mnt = image.with_name(image.name + ".mnt")
    mnt.mkdir(exist_ok=True)
    run("ntfs-3g", "-o", ",".join(("streams_interface=windows", *options)), image, mnt)
    try:
        yield mnt
    finally:
        run("umount", mnt)
        mnt.rmdir()


def blank(image: Path, size_mib: int = 24) -> Path:
    with image.open("wb") as f:
        f.truncate(size_mib << 20)
    run("mkntfs", "-q", "-F", "-f", image)
    return image


def reparse(path: Path, tag: int, data: bytes) -> None:
    """Give ``path`` a reparse point (ntfs-3g takes the raw REPARSE_DATA_BUFFER)."""
    os.setxattr(path, "system.ntfs_reparse_data", struct.pack("<IHH", tag, len(data), 0) + data)


def link_data(target: str, junction: bool = False) -> bytes:
    """A relative symbolic link's reparse data, or a junction's (no flags field) to ``target``."""
    name = target.encode("utf-16-le")
    head = struct.pack("<HHHH", 0, len(name), len(name) + 2, len(name))
    flags = b"" if junction else struct.pack("<I", 1)
    return head + flags + name + b"\0\0" + name + b"\0\0"


def wof(path: Path, payload: bytes, algorithm: int = WOF_XPRESS4K, garbage: bool = False) -> None:
    """``path`` as a WOF-compressed file of ``payload``: 4 KiB chunks (XPRESS4K's size) stored raw,
    which the format allows when compression does not pay; ``garbage`` stores the first chunk as
    a short (so compressed) chunk of bytes no decompressor accepts."""
    size = 4096 if algorithm == WOF_XPRESS4K else 32768
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    if garbage:
        chunks[0] = b"\xff" * 100
    ends, end = [], 0
    for chunk in chunks[:-1]:
        end += len(chunk)
        ends.append(end)
    path.write_bytes(b"")
    Path(f"{path}:WofCompressedData").write_bytes(b"".join(struct.pack("<I", e) for e in ends) + b"".join(chunks))
    os.truncate(path, len(payload))  # the default stream: sparse, of the uncompressed size
    reparse(path, TAG_WOF, struct.pack("<IIII", 1, 2, 1, algorithm))


def build_features(image: Path) -> dict[str, bytes]:
    """The feature image: streams, reparse points of every kind, WOF, a stale tail. Returns the
    contents the WOF files must decompress to (no other reader here can)."""
    blank(image)
    with mounted(image) as root:
        (root / "plain.txt").write_bytes(b"nothing to see\n" * 50)
        Path(f"{root}/:rootstream").write_bytes(MARK)  # a stream of the root directory itself
        (root / "docs").mkdir()
        (root / "docs" / "eicar.com").write_bytes(eicar())
        ads = root / "ads"
        ads.mkdir()
        (ads / "host.txt").write_bytes(b"a harmless default stream\n")
        Path(f"{ads}/host.txt:hidden").write_bytes(b"x" * 5000 + MARK)
        (ads / "only-ads.txt").write_bytes(b"")
        Path(f"{ads}/only-ads.txt:payload").write_bytes(eicar())
        (ads / "folder").mkdir()
        Path(f"{ads}/folder:dirstream").write_bytes(MARK)
        rp = root / "reparse"
        rp.mkdir()
        wofs = {
            "/reparse/wof.bin": os.urandom(5000) + MARK + os.urandom(9000),  # across chunks 1 and 2
            "/reparse/wof-lzx.bin": os.urandom(40000) + MARK,
        }
        wof(rp / "wof.bin", wofs["/reparse/wof.bin"])
        wof(rp / "wof-lzx.bin", wofs["/reparse/wof-lzx.bin"], algorithm=WOF_LZX)
        wof(rp / "wof-bad.bin", MARK + os.urandom(9000), garbage=True)
        (rp / "cloud.bin").write_bytes(b"y" * 100 + MARK)
        reparse(rp / "cloud.bin", TAG_CLOUD, b"\x01\x00\x00\x00" + b"\x00" * 12)
        (rp / "dehydrated.bin").write_bytes(b"")
        os.truncate(rp / "dehydrated.bin", 50000)
        reparse(rp / "dehydrated.bin", TAG_CLOUD, b"\x01\x00\x00\x00" + b"\x00" * 12)
        (rp / "vendor.bin").write_bytes(MARK)
        reparse(rp / "vendor.bin", TAG_VENDOR, b"\x00" * 8)
        (rp / "dedup.bin").write_bytes(b"")
        reparse(rp / "dedup.bin", TAG_DEDUP, b"\x00" * 16)
        (rp / "link").write_bytes(b"")
        reparse(rp / "link", TAG_SYMLINK, link_data("../docs/eicar.com"))
        (rp / "junction").mkdir()
        (rp / "junction" / "behind.com").write_bytes(eicar())  # reached only through the MFT
        reparse(rp / "junction", TAG_MOUNT_POINT, link_data("\\??\\C:\\docs", junction=True))
        stale = bytearray(b"v" * STALE_SIZE)
        stale[STALE_MARK_AT : STALE_MARK_AT + len(MARK)] = MARK
        (root / STALE_FILE).write_bytes(bytes(stale))
        (root / "efs.bin").write_bytes(b"ciphertext, as far as anyone without the key knows")
        (root / "odd").mkdir()  # alone in its directory: the patched name keeps the index sorted
        (root / "odd" / "qname.txt").write_bytes(MARK)
        (root / "odd-stream.txt").write_bytes(b"default stream\n")
        Path(f"{root}/odd-stream.txt:qstream").write_bytes(eicar())
    set_initialized_size(image, STALE_FILE, STALE_VALID)
    set_encrypted(image, "efs.bin")
    unpair(image, "qname")
    unpair(image, "qstream")
    return wofs


def set_initialized_size(image: Path, name: str, valid: int) -> None:
    """Lower the initialized (valid data) size of ``/name``'s default stream to ``valid`` in place;
    the clusters past it keep their bytes, as after a crash or a preallocating writer."""
    data = bytearray(image.read_bytes())
    header = _attribute(data, image, name, 0x80, nonresident=True)
    field = header + 0x38  # InitializedSize
    assert field % 512 < 510 and struct.unpack_from("<Q", data, field)[0] == STALE_SIZE
    struct.pack_into("<Q", data, field, valid)
    image.write_bytes(bytes(data))


def set_encrypted(image: Path, name: str) -> None:
    """Mark ``/name`` EFS-encrypted in its $STANDARD_INFORMATION (ntfs-3g refuses to set the flag)."""
    data = bytearray(image.read_bytes())
    header = _attribute(data, image, name, 0x10, nonresident=False)
    field = header + struct.unpack_from("<H", data, header + 0x14)[0] + 0x20  # value + FileAttributes
    assert field % 512 < 510
    struct.pack_into("<I", data, field, struct.unpack_from("<I", data, field)[0] | 0x4000)
    image.write_bytes(bytes(data))


def unpair(image: Path, text: str) -> None:
    """Replace the first letter of ``text`` by an unpaired surrogate (U+D800) wherever it is
    written as UTF-16 on the volume (MFT name attributes, directory indexes): a name Windows
    accepts and no UTF-8 string can hold."""
    data = image.read_bytes()
    needle = text.encode("utf-16-le")
    assert data.count(needle) >= 1
    image.write_bytes(data.replace(needle, b"\x00\xd8" + needle[2:]))


def _attribute(data: bytearray, image: Path, name: str, kind: int, nonresident: bool) -> int:
    """Offset in ``data`` of the first unnamed attribute ``kind`` of ``/name``'s MFT record."""
    segment = int(run("ifind", "-n", f"/{name}", image).split()[0])
    boot = bytes(data[:512])
    cluster = struct.unpack_from("<H", boot, 11)[0] * boot[13]
    record = struct.unpack_from("<Q", boot, 48)[0] * cluster + segment * 1024
    assert data[record : record + 4] == b"FILE" and name.encode("utf-16-le") in data[record : record + 1024]
    offset = record + struct.unpack_from("<H", data, record + 0x14)[0]
    while struct.unpack_from("<I", data, offset)[0] != 0xFFFFFFFF:
        found, length = struct.unpack_from("<II", data, offset)
        if found == kind and data[offset + 8] == int(nonresident) and data[offset + 9] == 0:
            return offset
        offset += length
    raise AssertionError(f"no unnamed attribute {kind:#x} in MFT record {segment}")


def break_subnode_link(image: Path) -> int:
    """Point the first index entry that has a sub-node (a B-tree child) in an INDX block at a
    block that does not exist, as one flipped byte can; returns the image offset changed. Readers
    that descend the tree lose the whole subtree; the records and the other blocks are intact."""
    data = bytearray(image.read_bytes())
    for block in range(0, len(data), 4096):
        if data[block : block + 4] != b"INDX":
            continue
        offset = block + 24 + struct.unpack_from("<I", data, block + 24)[0]
        while offset < block + 4096:
            length, flags = struct.unpack_from("<H", data, offset + 8)[0], data[offset + 12]
            vcn = offset + length - 8
            if flags & 1 and vcn % 512 < 504:  # has a sub-node; its VCN clear of the fixup bytes
                struct.pack_into("<Q", data, vcn, 0x7FFF)
                image.write_bytes(bytes(data))
                return vcn
            if flags & 2 or length == 0:
                break
            offset += length
    raise AssertionError("no index entry with a sub-node in any INDX block")
