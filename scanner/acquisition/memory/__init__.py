"""Memory sources by format. One module per format, one line per format here."""

from __future__ import annotations

import importlib
import os
from typing import cast

from scanner.acquisition.hostfile import open_host_file
from scanner.acquisition.memory.base import MemorySource, PhysRange
from scanner.acquisition.memory.unsupported import KNOWN
from scanner.errors import InvalidArgument, SourceError

REGISTRY: dict[str, str] = {
    "raw": "scanner.acquisition.memory.raw:RawMemory",
    "elfcore": "scanner.acquisition.memory.elfcore:ElfCoreMemory",
    "lime": "scanner.acquisition.memory.lime:LimeMemory",
    "vmware": "scanner.acquisition.memory.vmware:VmwareMemory",
    "kdump": "scanner.acquisition.memory.kdump:KdumpMemory",
    "wincrash": "scanner.acquisition.memory.wincrash:WindowsCrashMemory",
    "unsupported": "scanner.acquisition.memory.unsupported:UnsupportedDump",
}

# Leading bytes that name a format, for ``format="auto"`` (a .vmem has none: it goes by name).
# Formats recognised but not read (hibernation files, migration streams) are ``unsupported``:
# scanned as raw bytes they would look complete, so they are a named gap instead.
MAGICS: dict[bytes, str] = {
    b"KDUMP   ": "kdump",
    b"DISKDUMP": "kdump",
    b"makedumpfile\0": "kdump",
    b"PAGEDUMP": "wincrash",
    b"PAGEDU64": "wincrash",
    **dict.fromkeys(KNOWN, "unsupported"),
    b"\x7fELF": "elfcore",
    b"EMiL": "lime",
    b"\xd0\xbe\xd2\xbe": "vmware",
    b"\xd1\xba\xd1\xba": "vmware",
    b"\xd2\xbe\xd2\xbe": "vmware",
    b"\xd3\xbe\xd3\xbe": "vmware",
}


def open_memory(path: str, fmt: str = "raw") -> MemorySource:
    """Open ``path`` as guest physical memory in format ``fmt`` (``"auto"``: :func:`detect_format`)."""
    if fmt == "auto":
        fmt = detect_format(path)
    try:
        module_name, cls_name = REGISTRY[fmt].split(":")
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise InvalidArgument("target.memory.format", f"unknown format {fmt!r} (known: {known})") from None
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cast(MemorySource, cls(path))


def detect_format(path: str) -> str:
    """The format of the dump at ``path`` from its leading bytes; ``.vmem`` by name; ``raw`` only
    when nothing recognises the bytes."""
    opened = open_host_file(path, "memory image", follow=True, block_devices=True)
    try:
        head = os.pread(opened.fd, 18, 0)
    except OSError as e:
        raise SourceError(path, f"cannot read memory image: {e.strerror}") from e
    finally:
        os.close(opened.fd)
    fmt = next((name for magic, name in MAGICS.items() if head.startswith(magic)), "")
    if fmt == "elfcore" and not _is_elf_core(head):
        fmt = ""  # an ELF executable or library: not a dump, scan its bytes as they are
    if fmt:
        return fmt
    return "vmware" if path.lower().endswith(".vmem") else "raw"


def _is_elf_core(head: bytes) -> bool:
    """e_type (at 16, in the byte order of EI_DATA) is ET_CORE."""
    if len(head) < 18:
        return False
    e_type = int.from_bytes(head[16:18], "little" if head[5] == 1 else "big")
    return e_type == 4


__all__ = ["MAGICS", "REGISTRY", "MemorySource", "PhysRange", "detect_format", "open_memory"]
