"""Memory sources by format. One module per format, one line per format here."""

from __future__ import annotations

import importlib
from typing import cast

from scanner.acquisition.memory.base import MemorySource, PhysRange
from scanner.errors import InvalidArgument

REGISTRY: dict[str, str] = {
    "raw": "scanner.acquisition.memory.raw:RawMemory",
}


def open_memory(path: str, fmt: str = "raw") -> MemorySource:
    """Open ``path`` as guest physical memory in format ``fmt``."""
    try:
        module_name, cls_name = REGISTRY[fmt].split(":")
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise InvalidArgument("target.memory.format", f"unknown format {fmt!r} (known: {known})") from None
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cast(MemorySource, cls(path))


__all__ = ["REGISTRY", "MemorySource", "PhysRange", "open_memory"]
