"""VMDK: monolithic sparse, stream-optimized, flat with a descriptor, and snapshot deltas.

``dissect.hypervisor`` reads the grain tables, follows a descriptor to its extents and a delta's
``parentFileNameHint`` to its parent, so a ``-00000N.vmdk`` reads as the guest sees it. A single-file
sparse extent is read through :class:`StrictFile` so a truncated file or a grain table pointing
past its end is an error, not zeros.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from scanner.acquisition.disk.containers import Chain
from scanner.acquisition.disk.errors import unavailable


def open_disk(path: Path, chain: Chain) -> BinaryIO:
    try:
        from dissect.hypervisor.disk.vmdk import VMDK  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.hypervisor", e) from e
    f = chain.open(path)
    disk = VMDK(f)  # type: ignore[arg-type,return-value,no-any-return,unused-ignore]
    for extent in disk.disks:
        handle = getattr(extent, "fh", None)
        if handle is not None and handle is not f:
            chain.closers.append(handle.close)
    return disk  # type: ignore[arg-type,return-value,no-any-return,unused-ignore]
