"""VDI (VirtualBox): normal and fixed images. Differencing VDIs are refused by name.

dissect parses the header and block map; reads are done here block by block
(:func:`_stream_class`): dissect's VDI stream reads a multi-block range from the first block's
place in the file (or as zeros when that block is free), which in an image whose blocks were
allocated out of order (as a guest writes them) gives the wrong bytes for everything after it.
"""

from __future__ import annotations

from functools import cache
from typing import Any, BinaryIO

from scanner.acquisition.disk.containers import Chain
from scanner.acquisition.disk.errors import CorruptData, DiskFormatError, unavailable
from scanner.acquisition.disk.image import StrictFile

DIFFERENCING = 4


def open_disk(image: StrictFile, chain: Chain) -> BinaryIO:
    try:
        from dissect.hypervisor.disk.vdi import VDI  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.hypervisor", e) from e
    vdi = VDI(image)
    if int(vdi.type) == DIFFERENCING:
        raise DiskFormatError(str(image.path), "differencing VDI: parent disks are not supported")
    if 4 * vdi.number_of_blocks > chain.max_table_bytes:
        raise DiskFormatError(str(image.path), "VDI block map larger than max_table_bytes")
    if vdi.block_size <= 0 or vdi.number_of_blocks * vdi.block_size < vdi.size:
        raise DiskFormatError(str(image.path), "VDI block map does not cover the disk")
    return _stream_class()(vdi)  # type: ignore[no-any-return]


@cache
def _stream_class() -> type:
    from dissect.hypervisor.disk import vdi  # type: ignore[import-untyped,unused-ignore]

    class BlockStream(vdi.VDIStream):  # type: ignore[misc]
        def _read(self, offset: int, length: int) -> bytes:
            free, zero = vdi.VDI_IMAGE_BLOCK_FREE & 0xFFFFFFFF, vdi.VDI_IMAGE_BLOCK_ZERO & 0xFFFFFFFF
            return _read_blocks(self, free, zero, offset, length)

    return BlockStream


def _read_blocks(stream: Any, free: int, zero: int, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset``, each block looked up in the map on its own."""
    out = []
    size, base = stream.block_size, stream.vdi.data_offset
    while length > 0:
        index, inside = divmod(offset, size)
        count = min(length, size - inside)
        block = stream.map[index] & 0xFFFFFFFF
        if block in (free, zero):
            out.append(bytes(count))
        elif block >= 0x80000000:
            raise CorruptData(f"VDI block map entry {index}: {block:#x}")
        else:
            stream.fh.seek(base + block * size + inside)
            out.append(stream.fh.read(count))
        offset += count
        length -= count
    return b"".join(out)
