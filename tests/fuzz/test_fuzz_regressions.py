"""Every input the fuzzer ever found to crash or hang a parser, and every seed, replayed.

Crashers are kept under ``tests/fuzz/crashers/<target>/`` by ``python -m benchmarks.fuzz --keep``;
each must now end within the contract (no exception but the documented ``ScannerError`` family,
which the targets absorb) and in bounded time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.targets import SEEDS, TARGETS

CRASHERS = Path(__file__).parent / "crashers"


def kept() -> list[tuple[str, Path]]:
    if not CRASHERS.is_dir():
        return []
    return sorted((d.name, p) for d in CRASHERS.iterdir() if d.is_dir() for p in d.iterdir() if p.is_file())


@pytest.mark.timeout(120)
def test_kept_crashers_stay_within_the_contract() -> None:
    for target, path in kept():
        TARGETS[target](path.read_bytes())


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.timeout(120)
def test_seeds_and_their_truncations_stay_within_the_contract(target: str, tmp_path: Path) -> None:
    for seed in SEEDS[target](tmp_path):
        for cut in (len(seed), len(seed) // 2, 512, 17, 0):
            TARGETS[target](seed[:cut])
