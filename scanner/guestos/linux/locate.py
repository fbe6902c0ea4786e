"""Find the running kernel's banner and its BTF blob in guest physical memory, by content alone.

The ``Linux version ...`` banner (``linux_banner``, ending ``\\n\\0``) and the vmlinux ``.BTF``
section (magic ``9f eb 01 00``, ``hdr_len`` 24) both sit in the kernel image's read-only data, so
they can be found in a raw RAM image with no symbols. Reads go through the source's windows, in
chunks with an overlap, so any source (raw, ELF core, LiME, live) works.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from scanner import native
from scanner.acquisition.memory import MemorySource
from scanner.errors import UnreadableError
from scanner.guestos.btf import blob_length

CHUNK = 16 << 20
OVERLAP = 4096
BTF_MAGIC = b"\x9f\xeb\x01\x00\x18\x00\x00\x00"
BANNER_PREFIX = b"Linux version "
BANNER_RE = re.compile(rb"Linux version [ -~]{8,400}\n\0")
MAX_CANDIDATES = 64
BATCH = 4096  # offsets asked of native.find_all at a time
SWAPPER = b"swapper/0\0\0\0\0\0\0\0"  # init_task's comm (TASK_COMM_LEN 16)
MAX_SWAPPERS = 64


@dataclass(frozen=True)
class Found:
    """Where the banner, the BTF blobs and ``init_task``'s name are (physical addresses) in this memory."""

    banners: tuple[tuple[int, str], ...]
    btfs: tuple[tuple[int, int], ...]  # (physical address, length), largest first
    swappers: tuple[int, ...] = ()  # the first MAX_SWAPPERS "swapper/0" task names, address order

    @property
    def banner(self) -> str:
        return preferred_banner(text for _, text in self.banners)


BUILT_RE = re.compile(r"#\d")  # the build number the final link stamps into the banner


def preferred_banner(banners: Iterable[str]) -> str:
    """The banner the kernel runs under, from candidates in address order: the first with a build
    number (``#1 SMP ...``), else the first. A 6.1 image also holds the weak ``linux_banner`` that
    ``init/version.c`` compiles before ``version-timestamp.o`` overrides it (``# SMP ...``, no
    number, never used); taking the lowest address would pick it on one guest and a ``#1`` copy
    elsewhere in RAM on another, so the same kernel would get two profile keys."""
    first = ""
    for text in banners:
        if BUILT_RE.search(text):
            return text
        first = first or text
    return first


def views(source: MemorySource, size: int = CHUNK, overlap: int = OVERLAP) -> Iterator[tuple[int, memoryview]]:
    """``(physical address, view)`` over every range, overlapping by ``overlap`` bytes; each view
    is valid only until the next one is asked for (no copy). Unreadable windows are passed over."""
    for r in source.ranges():
        pos = r.start
        while pos < r.end:
            length = min(size + overlap, r.end - pos)
            try:
                with source.window(pos, length) as view:
                    yield pos, view
            except UnreadableError:
                pass
            pos += size


def find_in(source: MemorySource, needle: bytes, limit: int) -> Iterator[int]:
    """Physical addresses of ``needle`` in ``source`` (the first ``limit`` per window), yielded with
    no window held, so the caller may read the source between them. Overlaps may repeat a hit."""
    for r in source.ranges():
        pos = r.start
        while pos < r.end:
            length = min(CHUNK + OVERLAP, r.end - pos)
            try:
                with source.window(pos, length) as view:
                    found = native.find_all(view, needle, limit)
            except UnreadableError:
                found = []
            yield from (pos + at for at in found)
            pos += CHUNK


def chunks(source: MemorySource, size: int = CHUNK, overlap: int = OVERLAP) -> Iterator[tuple[int, bytes]]:
    """``(physical address, bytes)`` over every range, overlapping by ``overlap`` bytes."""
    for pos, view in views(source, size, overlap):
        yield pos, bytes(view)


def find_each(view: memoryview, needle: bytes) -> Iterator[int]:
    """Every offset of ``needle`` in ``view`` (overlapping too), in order, ``BATCH`` at a time."""
    start = 0
    while True:
        hits = native.find_all(view[start:], needle, BATCH)
        yield from (start + at for at in hits)
        if len(hits) < BATCH:
            return
        start += hits[-1] + 1


def locate(source: MemorySource) -> Found:
    """Every banner (in address order), the largest valid-looking BTF headers in ``source``
    (bounded), largest first, and where ``init_task``'s name is: one pass, searched in place
    (``native.find_all``). The kernel's own BTF blob is the largest; a guest with modules loaded
    (or their files in its page cache) holds many small split-BTF blobs that cannot stand alone."""
    banners: dict[int, str] = {}
    btfs: dict[int, int] = {}
    swappers: dict[int, None] = {}
    for base, view in views(source):
        for at in find_each(view, BANNER_PREFIX):
            if len(banners) >= MAX_CANDIDATES:
                break
            m = BANNER_RE.match(view, at)
            if m:
                banners.setdefault(base + at, m.group()[:-2].decode("ascii"))
        for at in find_each(view, BTF_MAGIC):
            length = blob_length(bytes(view[at : at + 24]))
            if length:
                btfs.setdefault(base + at, length)
                if len(btfs) > MAX_CANDIDATES:  # keep the largest: module BTF (split, small) is many
                    del btfs[min(btfs, key=lambda a: (btfs[a], -a))]
        if len(swappers) < MAX_SWAPPERS:
            swappers.update((base + at, None) for at in native.find_all(view, SWAPPER, MAX_SWAPPERS))
    largest_first = sorted(btfs.items(), key=lambda item: (-item[1], item[0]))
    return Found(tuple(sorted(banners.items())), tuple(largest_first), tuple(list(swappers)[:MAX_SWAPPERS]))


def read_physical(source: MemorySource, address: int, length: int) -> bytes:
    """``length`` bytes at physical ``address``, across ranges if needed (raises UnreadableError)."""
    out = bytearray()
    while len(out) < length:
        n = min(CHUNK, length - len(out))
        with source.window(address + len(out), n) as view:
            out += view
    return bytes(out)
