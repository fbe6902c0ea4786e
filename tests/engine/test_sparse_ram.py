"""A guest's RAM file on tmpfs is sparse: scanning it must not fill its holes with host memory."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from scanner.acquisition.mapped import file_holes, file_window
from scanner.engine import Engine, EngineSettings
from scanner.engine.cache import ResultCache
from scanner.rulesets import compile_path
from scanner.targets import TargetSpec, build_target
from scanner.verdicts import VerdictKind
from tests.support.samples import eicar

MiB = 1024 * 1024
SHM = Path("/dev/shm")  # where QEMU guests keep file-backed RAM


@pytest.fixture
def sparse_ram():
    path = SHM / f"avscan-test-{uuid.uuid4().hex}"
    with path.open("wb") as f:
        f.truncate(256 * MiB)
        for offset in (5 * MiB + 100, 100 * MiB - 30, 200 * MiB):
            f.seek(offset)
            f.write(eicar())
    yield path
    path.unlink(missing_ok=True)


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_holes_are_reported_and_never_read(sparse_ram, tmp_path):
    with sparse_ram.open("rb") as f:
        holes = file_holes(f.fileno(), 0, 256 * MiB)
    assert sum(end - start for start, end in holes) > 250 * MiB
    before = allocated(sparse_ram)
    rules = compile_path(Path(__file__).resolve().parents[2] / "signatures")
    cache = ResultCache(tmp_path / "cache.sqlite3")
    try:
        for engine in (Engine(EngineSettings(threads=2)), Engine(EngineSettings(threads=2), cache), Engine(
                EngineSettings(threads=2), cache)):  # fmt: skip
            try:
                with build_target(
                    TargetSpec("memory", {"path": str(sparse_ram), "format": "raw", "os": "physical"})
                ) as t:
                    verdict = engine.scan(rules, t)
            finally:
                engine.close()
            assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete
            heads = sorted(s.address for f in verdict.findings for s in f.strings if s.identifier == "$head")
            assert heads == [5 * MiB + 100, 100 * MiB - 30, 200 * MiB]
            # not one hole page: the pages around each marker are read as the zero page, untouched
            grown = allocated(sparse_ram) - before
            assert grown == 0, f"scanning allocated {grown / MiB:.2f} MiB of the guest's holes"
        assert verdict.coverage.cache_hits > 0 and verdict.coverage.cache_misses == 0
    finally:
        cache.close()


def test_a_window_that_starts_and_ends_inside_hole_pages_touches_none_of_them(sparse_ram):
    """Kernel structures are read at any byte address: the partial first and last pages of such a
    window may lie wholly in holes, and reading them must not allocate them either."""
    before = allocated(sparse_ram)
    with sparse_ram.open("rb") as f:
        for offset, length in ((5 * MiB - 3000, 6000), (5 * MiB + 4096 + 17, 100), (7 * MiB + 1, 4 * MiB - 2)):
            with file_window(f.fileno(), offset, length, str(sparse_ram), holes=True) as view:
                assert view.tobytes() == os.pread(f.fileno(), length, offset)
    assert allocated(sparse_ram) == before
