"""VMDK: monolithic sparse, stream-optimized, flat or split with a descriptor, and snapshot deltas.

``dissect.hypervisor`` reads the grain tables; the files a VMDK names are opened here, never by
dissect (it would open ``parentFileNameHint`` and extent names relative to the image, following
``../`` and symlinks): extents and the parent go through :meth:`Chain.open_ref`, confined to the
image's directory, and the parent through the container registry, so a delta whose parent is
itself is a loop (one error), not a recursion. An extent or parent that is refused or missing is
a gap (:meth:`Chain.absent`) whose sectors fail to read. The grain directory must fit
``max_table_bytes`` and a descriptor is at most :data:`MAX_DESCRIPTOR` bytes.
"""

from __future__ import annotations

import struct
import zlib
from functools import cache
from pathlib import PurePosixPath
from typing import Any, BinaryIO

from scanner.acquisition.disk.containers import Absent, Chain, open_container
from scanner.acquisition.disk.errors import CorruptData, DiskFormatError, ReferenceRefused, unavailable
from scanner.acquisition.disk.image import StrictFile

SECTOR = 512
MAX_DESCRIPTOR = 1024 * 1024
NO_PARENT = "ffffffff"
EMBEDDED_LBA = 0x20000


def open_disk(image: StrictFile, chain: Chain) -> BinaryIO:
    try:
        from dissect.hypervisor.disk import vmdk  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.hypervisor", e) from e
    image.seek(0)
    if image.read(4) == b"# Di":
        if image.size > MAX_DESCRIPTOR:
            raise DiskFormatError(str(image.path), f"descriptor file larger than {MAX_DESCRIPTOR} bytes")
        image.seek(0)
        descriptor = vmdk.DiskDescriptor.parse(image.read(image.size).decode(errors="replace"))
        parent = _parent(descriptor, image, chain)
        disks = [_extent(vmdk, extent, image, chain, parent) for extent in descriptor.extents]
    else:
        _check_grain_directory(image, chain)
        image.seek(0)
        sparse = _sparse_class()(image)
        descriptor = sparse.descriptor
        parent = _parent(descriptor, image, chain)
        sparse.parent = parent
        disks = [sparse]
    if not disks:
        raise DiskFormatError(str(image.path), "descriptor lists no extents")
    return _assemble(vmdk.VMDK, disks, parent, descriptor)


def _parent(descriptor: Any, image: StrictFile, chain: Chain) -> Any:
    """The delta's parent disk (opened through the registry), an Absent stand-in, or None."""
    if descriptor is None or descriptor.attr.get("parentCID", NO_PARENT).lower() == NO_PARENT:
        return None
    hint = str(descriptor.attr.get("parentFileNameHint", "")).replace("\\", "/")
    names = [hint, PurePosixPath(hint).name] if "/" in hint else [hint]
    refused: ReferenceRefused | None = None
    for name in names:  # the hint as written, then (as VMware does) its base name beside the delta
        try:
            handle = chain.open_ref(name, image.path.parent)
        except ReferenceRefused as e:
            refused = refused or e
            continue
        stream, _ = open_container(handle, "auto", chain)
        return stream
    assert refused is not None
    return chain.absent("parent disk", refused)


def _extent(vmdk: Any, extent: Any, image: StrictFile, chain: Chain, parent: Any) -> Any:
    size = extent.sectors * SECTOR
    if extent.type == "ZERO":
        return vmdk.RawDisk(_Zero(size), size)
    if extent.type not in ("SPARSE", "VMFSSPARSE", "SESPARSE", "FLAT", "VMFS"):
        raise DiskFormatError(str(image.path), f"unsupported VMDK extent type {extent.type}")
    if extent.type in ("FLAT", "VMFS") and extent.start_sector:
        raise DiskFormatError(str(image.path), f"flat extent at sector offset {extent.start_sector}: not supported")
    try:
        handle = chain.open_ref(extent.filename or "", image.path.parent)
    except ReferenceRefused as e:
        return vmdk.RawDisk(chain.absent("extent", e, size), size)
    if extent.type in ("FLAT", "VMFS"):
        return vmdk.RawDisk(handle, size)
    _check_grain_directory(handle, chain)
    handle.seek(0)
    return _sparse_class()(handle, parent=parent)


@cache
def _sparse_class() -> type:
    """dissect's sparse extent with compressed grains inflated to at most one grain: a grain that
    inflates to more is corrupt (an error for what reads it), never a 1000:1 allocation."""
    from dissect.hypervisor.disk import vmdk  # type: ignore[import-untyped,unused-ignore]

    class BoundedSparseDisk(vmdk.SparseDisk):  # type: ignore[misc]
        def _read_compressed_grain(self, sector: int) -> bytes:
            return _inflate_grain(self.fh, sector, int(self.header.grain_size), int(self.header.flags))

    return BoundedSparseDisk


def _inflate_grain(fh: BinaryIO, sector: int, grain_sectors: int, flags: int) -> bytes:
    """A stream-optimized grain: ``[lba u64] size u32`` then deflate data (VMDK spec, "grain marker")."""
    header = 12 if flags & EMBEDDED_LBA else 4
    fh.seek(sector * SECTOR)
    head = fh.read(header)
    size = struct.unpack_from("<I", head, header - 4)[0]
    limit = grain_sectors * SECTOR
    if size > 2 * limit + SECTOR:  # deflate never grows data that much: a corrupt size
        raise CorruptData(f"grain at sector {sector}: compressed size {size} for a {limit}-byte grain")
    inflater = zlib.decompressobj()
    data = inflater.decompress(fh.read(size), limit)
    if inflater.unconsumed_tail:
        raise CorruptData(f"grain at sector {sector} inflates past its {limit} bytes: corrupt grain")
    return data


def _check_grain_directory(f: StrictFile, chain: Chain) -> None:
    """Refuse a sparse header whose grain directory would not fit ``max_table_bytes`` (before dissect reads it)."""
    f.seek(0)
    head = f.read(min(f.size, 512))
    if head[:4] != b"KDMV" or len(head) < 64:
        return
    if struct.unpack_from("<q", head, 56)[0] == -1 and f.size >= 1024:  # stream-optimized: footer at the end
        f.seek(f.size - 1024)
        head = f.read(512)
    capacity, grain, gtes = struct.unpack_from("<QQ", head, 12) + struct.unpack_from("<I", head, 44)
    if not grain or not gtes:
        raise DiskFormatError(str(f.path), "sparse header with a zero grain size or grain table size")
    entries = -(-capacity // (grain * gtes))
    if 4 * entries > chain.max_table_bytes:
        raise DiskFormatError(str(f.path), f"grain directory of {4 * entries} bytes exceeds max_table_bytes")


def _assemble(cls: Any, disks: list[Any], parent: Any, descriptor: Any) -> BinaryIO:
    """A dissect ``VMDK`` over extents opened here (its constructor would open files by name)."""
    from dissect.util.stream import AlignedStream  # type: ignore[import-untyped,unused-ignore]

    disk = cls.__new__(cls)
    disk.disks, disk.parent, disk.descriptor, disk._disk_offsets, disk.sector_count = disks, parent, descriptor, [], 0
    size = 0
    for extent in disks:
        if size:
            disk._disk_offsets.append(disk.sector_count)
        extent.offset, extent.sector_offset = size, disk.sector_count
        size += extent.size
        disk.sector_count += extent.sector_count
    AlignedStream.__init__(disk, size)
    return disk  # type: ignore[no-any-return]


class _Zero(Absent):
    """A ZERO extent: reads as zeros."""

    def __init__(self, size: int) -> None:
        super().__init__(size, "")

    def read(self, size: int | None = -1) -> bytes:
        n = self.size - self._pos if size is None or size < 0 else size
        self._pos += n
        return bytes(n)
