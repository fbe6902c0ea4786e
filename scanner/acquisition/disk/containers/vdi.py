"""VDI (VirtualBox): normal and fixed images. Differencing VDIs are refused by name."""

from __future__ import annotations

from typing import BinaryIO

from scanner.acquisition.disk.containers import Chain
from scanner.acquisition.disk.errors import DiskFormatError, unavailable
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
    return vdi.open()  # type: ignore[no-any-return]
