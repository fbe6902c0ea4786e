"""VHDX (fixed and dynamic). A differencing disk's parent is not looked up: an error saying so."""

from __future__ import annotations

from typing import BinaryIO

from scanner.acquisition.disk.containers import Chain
from scanner.acquisition.disk.errors import DiskFormatError, unavailable
from scanner.acquisition.disk.image import StrictFile


def open_disk(image: StrictFile, chain: Chain) -> BinaryIO:
    try:
        from dissect.hypervisor.disk.vhdx import VHDX  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.hypervisor", e) from e
    try:
        return VHDX(image)  # type: ignore[no-any-return]
    except AttributeError as e:  # no ``name`` to find a parent by: dissect cannot open the parent
        raise DiskFormatError(str(image.path), "differencing VHDX: parent disks are not supported") from e
