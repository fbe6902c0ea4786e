"""A process region's scattered pages, gathered for YARA: one native call, the same bytes."""

from __future__ import annotations

import os
import random
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.acquisition.memory.raw import RawMemory
from scanner.errors import UnreadableError
from scanner.targets.processes import Segment, VirtualRunUnit

PAGE = 4096
PAGES = 64


@contextmanager
def opened(path):
    source = RawMemory(str(path))
    try:
        yield source
    finally:
        source.close()


@pytest.fixture(scope="module")
def ram(tmp_path_factory):
    path = tmp_path_factory.mktemp("gather") / "ram"
    path.write_bytes(os.urandom(PAGES * PAGE))
    return path


def region(source, order: list[int], runs: int = 1) -> VirtualRunUnit:
    """Virtual pages backed by the physical pages in ``order`` (runs of ``runs`` pages stay
    physically contiguous, as in a real page-table walk)."""
    segments = [Segment(i * runs * PAGE, p * PAGE, runs * PAGE) for i, p in enumerate(order)]
    return VirtualRunUnit(source, "region", "test", 0x7F0000000000, segments, {})


@settings(max_examples=60, deadline=None)
@given(data=st.data(), runs=st.sampled_from([1, 2]))
def test_gathered_windows_equal_page_by_page_reads(ram, data, runs):
    frames = data.draw(st.permutations(range(0, PAGES, runs)))[: data.draw(st.integers(2, PAGES // runs))]
    size = len(frames) * runs * PAGE
    offset = data.draw(st.integers(0, size - 1))
    length = data.draw(st.integers(1, size - offset))
    raw = ram.read_bytes()
    expected = b"".join(raw[f * PAGE : (f + runs) * PAGE] for f in frames)[offset : offset + length]
    with opened(ram) as source:
        unit = region(source, frames, runs)
        with unit.window(offset, length) as view:
            native = view.tobytes()
        source.gather = lambda *a: False  # the window-by-window path
        with unit.window(offset, length) as view:
            fallback = view.tobytes()
    assert native == fallback == expected


def test_a_page_table_pointing_past_the_dump_is_unreadable_not_garbage(ram):
    with opened(ram) as source:
        unit = region(source, [3, PAGES + 5, 7])  # the middle frame is outside the 256 KiB dump
        with pytest.raises(UnreadableError, match="gather failed"), unit.window(100, 3 * PAGE - 200):
            pass


def test_the_gather_is_one_call_not_a_read_per_page(ram, monkeypatch):
    calls: list[int] = []
    with opened(ram) as source:
        original = source.gather

        def counted(physicals, lengths, dst):
            calls.append(len(physicals) // 8)
            return original(physicals, lengths, dst)

        monkeypatch.setattr(source, "gather", counted)
        monkeypatch.setattr(source, "window", lambda *a: pytest.fail("read page by page"))
        order = list(range(PAGES))
        random.Random(7).shuffle(order)
        with region(source, order).window(0, PAGES * PAGE) as view:
            assert len(view) == PAGES * PAGE
    assert calls == [PAGES]
