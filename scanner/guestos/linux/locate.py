"""Find the running kernel's banner and its BTF blob in guest physical memory, by content alone.

The ``Linux version ...`` banner (``linux_banner``, ending ``\\n\\0``) and the vmlinux ``.BTF``
section (magic ``9f eb 01 00``, ``hdr_len`` 24) both sit in the kernel image's read-only data, so
they can be found in a raw RAM image with no symbols. Reads go through the source's windows, in
chunks with an overlap, so any source (raw, ELF core, LiME, live) works.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from scanner.acquisition.memory import MemorySource
from scanner.errors import UnreadableError
from scanner.guestos.btf import blob_length

CHUNK = 16 << 20
OVERLAP = 4096
BTF_MAGIC = b"\x9f\xeb\x01\x00\x18\x00\x00\x00"
BTF_PREFIX = BTF_MAGIC[:3]
BANNER_PREFIX = b"Linux version "
BANNER_RE = re.compile(rb"Linux version [ -~]{8,400}\n\0")
MAX_CANDIDATES = 64


@dataclass(frozen=True)
class Found:
    """Where the banner and BTF blobs are (physical addresses) in this memory."""

    banners: tuple[tuple[int, str], ...]
    btfs: tuple[tuple[int, int], ...]  # (physical address, length), largest first

    @property
    def banner(self) -> str:
        return self.banners[0][1] if self.banners else ""


def chunks(source: MemorySource, size: int = CHUNK, overlap: int = OVERLAP) -> Iterator[tuple[int, bytes]]:
    """``(physical address, bytes)`` over every range, overlapping by ``overlap`` bytes."""
    for r in source.ranges():
        pos = r.start
        while pos < r.end:
            length = min(size + overlap, r.end - pos)
            try:
                with source.window(pos, length) as view:
                    yield pos, bytes(view)
            except UnreadableError:
                pass
            pos += size


def locate(source: MemorySource) -> Found:
    """Every banner (in address order) and the largest valid-looking BTF headers in ``source``
    (bounded), largest first: the kernel's own blob is the largest; a guest with modules loaded
    (or their files in its page cache) holds many small split-BTF blobs that cannot stand alone."""
    banners: dict[int, str] = {}
    btfs: dict[int, int] = {}
    for base, data in chunks(source):
        at = data.find(BANNER_PREFIX)
        while at >= 0 and len(banners) < MAX_CANDIDATES:
            m = BANNER_RE.match(data, at)
            if m:
                banners.setdefault(base + at, m.group()[:-2].decode("ascii"))
            at = data.find(BANNER_PREFIX, at + 1)
        at = data.find(BTF_PREFIX)  # no zero byte in the needle: fast over zero pages
        while at >= 0:
            length = blob_length(data[at : at + 24]) if data.startswith(BTF_MAGIC, at) else 0
            if length:
                btfs.setdefault(base + at, length)
                if len(btfs) > MAX_CANDIDATES:  # keep the largest: module BTF (split, small) is many
                    del btfs[min(btfs, key=lambda a: (btfs[a], -a))]
            at = data.find(BTF_PREFIX, at + 1)
    largest_first = sorted(btfs.items(), key=lambda item: (-item[1], item[0]))
    return Found(tuple(sorted(banners.items())), tuple(largest_first))


def read_physical(source: MemorySource, address: int, length: int) -> bytes:
    """``length`` bytes at physical ``address``, across ranges if needed (raises UnreadableError)."""
    out = bytearray()
    while len(out) < length:
        n = min(CHUNK, length - len(out))
        with source.window(address + len(out), n) as view:
            out += view
    return bytes(out)
