"""One pass over a memory unit: which blocks are zero, and a digest of every other block.

The planner needs the zero blocks to cut windows (``windows.aligned_windows``) and, with the
result cache, the content digest of every window to look it up. Both come from one read of the
unit (``scanner.native.block_digests``: zero test and XXH3-128 per 1 MiB block, and of each
block's first ``overlap`` bytes), split in pieces over the engine's threads, GIL released. A
window's digest is then assembled from the block digests it covers, without reading it again:
a rescan of an unchanged guest reads its memory once and scans nothing.

A window's bytes are described as segments, each a whole non-zero block (its digest), the head
of a block (the digest of its first ``overlap`` bytes) or part of a zero block (its length): the
encoding determines the window's bytes, so equal encodings mean equal bytes (up to XXH3-128
collisions under the cache's secret seed). A window whose bytes cannot be described so (cuts
that are not at block edges) gets no digest here; its worker hashes its bytes instead.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from scanner import native
from scanner.engine.windows import Window
from scanner.errors import UnreadableError
from scanner.targets.base import Unit

PIECE = 16 * 1024 * 1024  # bytes mapped per task of the pass

Segment = tuple[str, int, int]  # kind ("Z" zero, "B" whole block, "H" block head), unit offset, length
Submit = Callable[[Callable[[], Any]], "Future[Any]"]


@dataclass(frozen=True)
class BlockMap:
    """Per ``block`` of a unit: zero flag, XXH3-128 of the block and of its first ``head`` bytes."""

    size: int
    block: int
    head: int
    zero: bytes
    hashes: bytes
    heads: bytes


def build_block_map(
    unit: Unit,
    block: int,
    head: int,
    seed: int,
    submit: Submit | None = None,
    stop: Callable[[], bool] = lambda: False,
    digests: bool = True,
) -> BlockMap:
    """The map of ``unit``, read in ``PIECE``s (in parallel through ``submit`` when given).

    ``digests`` False: only the zero flags (no cache to key windows for); hashes stay empty.

    Unreadable pieces and pieces not read because ``stop()`` turned true are marked non-zero
    with no digest, so the scan reports them as unreadable or cancelled and never caches them.
    """
    if PIECE % block:
        raise ValueError("block must divide PIECE")
    n = (unit.size + block - 1) // block
    zero, hashes, heads = bytearray(n), bytearray(16 * n), bytearray(16 * n)

    def piece(offset: int) -> tuple[int, tuple[bytes, bytes, bytes] | None]:
        if stop():
            return offset, None
        try:
            with unit.window(offset, min(PIECE, unit.size - offset)) as view:
                if not digests:
                    return offset, (native.zero_pages(view, block), b"", b"")
                return offset, native.block_digests(view, block, head, seed)
        except UnreadableError:
            return offset, None

    offsets = range(0, unit.size, PIECE)
    if submit is not None:
        futures = [submit(lambda o=o: piece(o)) for o in offsets]  # type: ignore[misc]
        results = [f.result() for f in futures]
    else:
        results = [piece(o) for o in offsets]
    for offset, found in results:
        first = offset // block
        if found is None:
            continue  # zero stays 0 (scan it), hashes stay 0 (see ``segments``: no digest)
        z, h, hd = found
        zero[first : first + len(z)] = z
        if digests:
            hashes[16 * first : 16 * (first + len(z))] = h
            heads[16 * first : 16 * (first + len(z))] = hd
    return BlockMap(unit.size, block, head, bytes(zero), bytes(hashes), bytes(heads))


def segments(bm: BlockMap, window: Window) -> list[Segment] | None:
    """``window``'s bytes as segments the map has digests for, or None."""
    out: list[Segment] = []
    start, end = window.offset, window.offset + window.length
    for j in range(start // bm.block, (end + bm.block - 1) // bm.block):
        bs, be = j * bm.block, min(bm.size, (j + 1) * bm.block)
        lo, hi = max(start, bs), min(end, be)
        if bm.zero[j]:
            out.append(("Z", lo, hi - lo))
        elif (lo, hi) == (bs, be) and bm.hashes[16 * j : 16 * j + 16] != bytes(16):
            out.append(("B", lo, hi - lo))
        elif lo == bs and hi - lo == min(bm.head, be - bs) and bm.heads[16 * j : 16 * j + 16] != bytes(16):
            out.append(("H", lo, hi - lo))
        else:
            return None
    return out


def digest_from_map(bm: BlockMap, segs: list[Segment]) -> bytes:
    parts = []
    for kind, offset, length in segs:
        j = offset // bm.block
        value = b"" if kind == "Z" else (bm.hashes if kind == "B" else bm.heads)[16 * j : 16 * j + 16]
        parts.append(b"%s%d:" % (kind.encode(), length) + value)
    return b"|".join(parts)


def digest_from_view(view: memoryview, base: int, segs: list[Segment], seed: int) -> bytes | None:
    """The same digest computed from the bytes of ``view`` (starting at unit offset ``base``),
    or None when a segment said to be zero is not zero any more."""
    parts = []
    for kind, offset, length in segs:
        piece = view[offset - base : offset - base + length]
        if kind == "Z":
            if length and native.zero_pages(piece, length) != b"\x01":
                return None
            value = b""
        else:
            value = native.hash128(piece, seed)
        parts.append(b"%s%d:" % (kind.encode(), length) + value)
    return b"|".join(parts)
