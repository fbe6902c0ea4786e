"""VHD (Virtual PC / Hyper-V gen 1): fixed and dynamic. Differencing VHDs are refused by name."""

from __future__ import annotations

from typing import BinaryIO

from scanner.acquisition.disk.containers import Chain
from scanner.acquisition.disk.errors import DiskFormatError, unavailable
from scanner.acquisition.disk.image import StrictFile

DIFFERENCING = 4


def open_disk(image: StrictFile, chain: Chain) -> BinaryIO:
    try:
        from dissect.hypervisor.disk.vhd import VHD  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.hypervisor", e) from e
    image.seek(0)
    footer = 0 if image.read(8) == b"conectix" else max(0, image.size - 512)  # a fixed VHD: only at the end
    image.seek(footer + 60)  # disk type, big endian
    if int.from_bytes(image.read(4), "big") == DIFFERENCING:
        raise DiskFormatError(str(image.path), "differencing VHD: parent disks are not supported")
    return VHD(image)  # type: ignore[no-any-return]
