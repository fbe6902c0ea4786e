"""qcow2 (v2/v3), with backing-file chains resolved the way QEMU does.

``dissect.hypervisor`` parses the clusters; the backing file is resolved here (absolute, or
relative to the overlay's directory, as QEMU does) and opened through the container registry, so
a qcow2 over a raw or a qcow2 base works, the chain is bounded and loops are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from scanner.acquisition.disk.containers import Chain, open_container
from scanner.acquisition.disk.errors import DiskFormatError, unavailable


def open_disk(path: Path, chain: Chain) -> BinaryIO:
    try:
        from dissect.hypervisor.disk.qcow2 import QCow2  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.hypervisor", e) from e
    f = chain.open(path)
    image = QCow2(f, allow_no_backing_file=True)  # type: ignore[arg-type,return-value,no-any-return,unused-ignore]
    if image.needs_backing_file:
        name = image.auto_backing_file or ""
        backing = Path(name) if Path(name).is_absolute() else path.parent / name
        if not backing.exists():
            raise DiskFormatError(str(path), f"backing file {name!r} not found (looked at {backing})")
        fmt = (image.backing_format or "auto").lower()
        image.backing_file, _ = open_container(backing, fmt if fmt in ("raw", "qcow2") else "auto", chain)
    return image.open()  # type: ignore[no-any-return]
