"""A guest's RAM file on tmpfs is sparse: scanning it must not fill its holes with host memory."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from scanner.acquisition.mapped import file_holes
from scanner.engine import Engine, EngineSettings
from scanner.rulesets import compile_path
from scanner.targets import TargetSpec, build_target
from scanner.verdicts import VerdictKind
from tests.support.samples import eicar

MiB = 1024 * 1024
SHM = Path("/dev/shm")  # where QEMU guests keep file-backed RAM


@pytest.fixture
def sparse_ram():
    if not SHM.is_dir():
        pytest.skip("no /dev/shm")
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


def test_holes_are_reported_and_never_read(sparse_ram):
    with sparse_ram.open("rb") as f:
        holes = file_holes(f.fileno(), 0, 256 * MiB)
    assert sum(end - start for start, end in holes) > 250 * MiB
    before = allocated(sparse_ram)
    engine = Engine(EngineSettings(threads=2))
    try:
        with build_target(TargetSpec("memory", {"path": str(sparse_ram), "format": "raw", "os": "physical"})) as t:
            verdict = engine.scan(compile_path(Path(__file__).resolve().parents[2] / "signatures"), t)
    finally:
        engine.close()
    assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete
    heads = sorted(s.address for f in verdict.findings for s in f.strings if s.identifier == "$head")
    assert heads == [5 * MiB + 100, 100 * MiB - 30, 200 * MiB]
    grown = allocated(sparse_ram) - before
    assert grown < 8 * MiB, f"scanning allocated {grown / MiB:.1f} MiB of the guest's holes"
