"""The unit timeout really bounds a scan of a huge, mostly-hole memory image.

A 64 GiB sparse raw image with one non-zero byte in every MiB (256 MiB on disk, no whole 1 MiB
block is a hole, so nothing can be skipped without reading) is scanned with the default
signatures and the result cache on, under ``unit_timeout`` of T seconds. Baseline: T itself.
Target: the scan ends within 1.5 T + 1 s and says INCOMPLETE (TIMEOUT gaps), never CLEAN.
(Before the deadline covered the zero/digest pass, T = 5 took 11.2 s; a 1 TiB image did not end.)
Run: ``python -m benchmarks.deadline [--timeout 5] [--gib 64]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.corpus import REPO_ROOT

MiB = 1 << 20


def dotted_image(path: Path, gib: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, gib << 30)
        for i in range(gib << 10):
            os.pwrite(fd, b"\x01", i * MiB)
        os.fsync(fd)  # written back before the clock starts (the cache's identity syncs it otherwise)
    finally:
        os.close(fd)


def main() -> int:
    from scanner.engine import Engine, EngineSettings
    from scanner.engine.cache import ResultCache
    from scanner.rulesets import compile_path
    from scanner.targets.memory import MemoryTarget

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--gib", type=int, default=64)
    args = parser.parse_args()
    rules = compile_path(REPO_ROOT / "signatures")
    with tempfile.TemporaryDirectory(prefix="avscan-deadline-", dir="/var/tmp") as tmp:
        image = Path(tmp) / "dotted.raw"
        dotted_image(image, args.gib)
        cache = ResultCache(Path(tmp) / "cache.sqlite3", 64 * MiB)
        engine = Engine(EngineSettings(threads=2, unit_timeout=args.timeout), cache)
        began = time.monotonic()
        with MemoryTarget.from_params({"path": str(image)}) as target:
            verdict = engine.scan(rules, target)
        elapsed = time.monotonic() - began
        engine.close()
        cache.close()
    limit = 1.5 * args.timeout + 1
    timeouts = sum(1 for g in verdict.coverage.gaps if g.kind.value == "TIMEOUT")
    ok = elapsed <= limit and verdict.kind.value == "INCOMPLETE" and timeouts > 0
    print(f"{args.gib} GiB dotted image, unit_timeout {args.timeout:g} s (baseline): scan took {elapsed:.2f} s")
    print(f"ratio {elapsed / args.timeout:.2f}x the timeout (target <= {limit / args.timeout:.2f}x)")
    print(f"verdict {verdict.kind.value}, {timeouts} TIMEOUT gaps: {'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
