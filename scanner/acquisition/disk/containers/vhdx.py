"""VHDX (fixed and dynamic; a differencing disk's parent is looked up beside it)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from scanner.acquisition.disk.containers import Chain
from scanner.acquisition.disk.errors import unavailable


def open_disk(path: Path, chain: Chain) -> BinaryIO:
    try:
        from dissect.hypervisor.disk.vhdx import VHDX  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.hypervisor", e) from e
    f = chain.open(path)
    return VHDX(f)  # type: ignore[no-any-return]
