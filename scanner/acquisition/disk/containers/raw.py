"""Raw images and block devices: the file is the disk."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from scanner.acquisition.disk.containers import Chain


def open_disk(path: Path, chain: Chain) -> BinaryIO:
    return chain.open(path)  # type: ignore[return-value,unused-ignore]
