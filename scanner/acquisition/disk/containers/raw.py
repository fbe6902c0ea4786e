"""Raw images and block devices: the file is the disk."""

from __future__ import annotations

from typing import BinaryIO

from scanner.acquisition.disk.containers import Chain
from scanner.acquisition.disk.image import StrictFile


def open_disk(image: StrictFile, chain: Chain) -> BinaryIO:
    return image  # type: ignore[return-value]
