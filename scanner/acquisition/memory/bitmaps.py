"""Runs of page frames in dump bitmaps (one bit per frame, least significant bit first).

Dumps describe memory with bitmaps of up to a few hundred MiB; walking them a frame at a time in
Python is too slow, so runs are found with big-integer bit tricks a chunk at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

RUN_CHUNK = 1 << 16  # bytes of bitmap per step


def clip(bitmap: bytes, frames: int) -> bytes:
    """``bitmap`` cut to ``frames`` bits, the bits past it cleared (a header may lie about both)."""
    out = bytearray(bitmap[: -(-frames // 8)])
    if frames % 8 and len(out) * 8 > frames:
        out[-1] &= (1 << (frames % 8)) - 1
    return bytes(out)


def frame_runs(valid: bytes, dumped: bytes, frames: int | None = None) -> Iterator[tuple[int, int, bool]]:
    """``(first frame, end frame, dumped)`` for each run of existing frames with one dumped state,
    computed a chunk of the bitmaps at a time (big-integer bit tricks, no loop per frame).
    ``frames`` bounds the frames looked at."""
    if frames is not None:
        valid = clip(valid, frames)
    pending: tuple[int, int, bool] | None = None
    for at in range(0, len(valid), RUN_CHUNK):
        for start, end, state in _chunk_runs(valid[at : at + RUN_CHUNK], dumped[at : at + RUN_CHUNK], at * 8):
            if pending and pending[1] == start and pending[2] == state:
                pending = (pending[0], end, state)
                continue
            if pending:
                yield pending
            pending = (start, end, state)
    if pending:
        yield pending


def _chunk_runs(valid: bytes, dumped: bytes, base: int) -> Iterator[tuple[int, int, bool]]:
    v = int.from_bytes(valid, "little")
    d = int.from_bytes(dumped, "little") & v
    pfn = 0
    while True:
        rest = v >> pfn
        if not rest:
            return
        pfn += (rest & -rest).bit_length() - 1  # the next existing frame
        state = bool(d >> pfn & 1)
        same = (d if state else ~d & v) >> pfn  # frames from pfn on that exist with the same state
        run = (~same & (same + 1)).bit_length() - 1  # length of its lowest run of ones
        yield base + pfn, base + pfn + run, state
        pfn += run
