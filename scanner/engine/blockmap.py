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

from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any, cast

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
    for j in _hole_blocks(unit, block):  # known zero without reading (sparse RAM file holes)
        zero[j] = 1

    def piece(offset: int, length: int) -> tuple[int, tuple[bytes, bytes, bytes] | None]:
        if stop():
            return offset, None
        try:
            with unit.window(offset, length) as view:
                if not digests:
                    return offset, (native.zero_pages(view, block), b"", b"")
                return offset, native.block_digests(view, block, head, seed)
        except UnreadableError:
            return offset, None

    runs = list(_runs_to_read(zero, block, unit.size))
    if submit is not None:
        futures = [submit(lambda o=o, n=n: piece(o, n)) for o, n in runs]  # type: ignore[misc]
        results = [_piece_result(f, o) for f, (o, _) in zip(futures, runs, strict=True)]
    else:
        results = [piece(o, n) for o, n in runs]
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


def _piece_result(future: Future[Any], offset: int) -> tuple[int, tuple[bytes, bytes, bytes] | None]:
    """A piece's result; a piece whose pool was retired before it ran was not read (None)."""
    try:
        return cast(tuple[int, tuple[bytes, bytes, bytes] | None], future.result())
    except CancelledError:
        return offset, None


def _hole_blocks(unit: Unit, block: int) -> set[int]:
    """Blocks lying wholly inside holes the unit reports."""
    out: set[int] = set()
    for start, end in unit.holes():
        first = (start + block - 1) // block
        last = min(end, unit.size) // block if end < unit.size else (unit.size + block - 1) // block
        out.update(range(first, last))
    return out


def _runs_to_read(zero: bytearray, block: int, size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) pieces of at most ``PIECE`` bytes covering every block not known zero."""
    j, n = 0, len(zero)
    per_piece = PIECE // block
    while j < n:
        if zero[j]:
            j += 1
            continue
        k = j
        while k < n and not zero[k] and k - j < per_piece:
            k += 1
        yield j * block, min(k * block, size) - j * block
        j = k


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
