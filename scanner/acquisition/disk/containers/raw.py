"""Raw images and block devices: the file is the disk."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from scanner.acquisition.disk.containers import Chain
from scanner.acquisition.disk.image import StrictFile


def open_disk(path: Path, chain: Chain) -> BinaryIO:
    chain.add(path)
    f = StrictFile(path)
    chain.closers.append(f.close)
    return f  # type: ignore[arg-type,return-value,no-any-return,unused-ignore]
