"""Engine throughput against plain ``rules.match`` on the same bytes, in the same process.

For each public rule set: (a) baseline, one ``rules.match(data=...)`` over the whole buffer on
one thread; (b) the engine with 1 thread and (c) with 2 threads on the same bytes as a raw memory
image. Prints MiB/s, the ratios to the baseline with their targets, and whether the engine found
the same rules as the baseline. Run: ``python -m benchmarks.engine_throughput``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.corpus import DEFAULT_RULESETS_DIR, REPO_ROOT, MiB, write_corpus
from scanner.engine import Engine, EngineSettings
from scanner.rulesets import compile_path
from scanner.targets import TargetSpec, build_target

RULESETS = ("elastic-protections-artifacts/rules", "signature-base/rules")
TARGETS = {1: 1.0, 2: 1.8}  # engine threads -> minimum ratio to the baseline

RuleKey = tuple[str, str]


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """The shortest wall time of ``repeat`` calls, and the last call's result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def physical_limits(data: bytes, repeat: int) -> list[tuple[str, float]]:
    """Seconds for a memory copy and for hashing ``data``: what no scanner can beat."""
    buf = bytearray(len(data))  # touched once, so this copy measures bandwidth, not page faults
    out = [
        ("memory copy (bytes(memoryview))", best_of(repeat, lambda: bytes(memoryview(data)))[0]),
        ("memory copy into a touched buffer", best_of(repeat, lambda: buf.__setitem__(slice(None), data))[0]),
    ]
    try:
        import xxhash

        out.append(("xxh3_64", best_of(repeat, lambda: xxhash.xxh3_64(data).digest())[0]))
    except ImportError:
        pass
    out.append(("sha256", best_of(repeat, lambda: hashlib.sha256(data).digest())[0]))
    # The same work on 2 threads: if this does not scale, neither can the engine (busy machine).
    halves = (memoryview(data)[: len(data) // 2], memoryview(data)[len(data) // 2 :])
    with ThreadPoolExecutor(2) as pool:
        two = best_of(repeat, lambda: list(pool.map(lambda h: hashlib.sha256(h).digest(), halves)))[0]
    out.append(("sha256, 2 threads (halves)", two))
    return out


EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}" + b"$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
# planted so the comparison can fail: inside a window, across the first 16 MiB window edge, late
PLANTS = (1 * MiB + 123, 16 * MiB - 20, 200 * MiB + 7)


def plant(image: Path, size: int) -> None:
    with image.open("r+b") as f:
        for offset in PLANTS:
            if offset + len(EICAR) <= size:
                f.seek(offset)
                f.write(EICAR)


def with_default_signatures(rules_dir: Path, tmp: Path) -> Path:
    """The public rule set plus the default signatures (its EICAR rule sees the planted copies)."""
    out = tmp / rules_dir.parent.name
    shutil.copytree(rules_dir, out / "set")
    shutil.copytree(REPO_ROOT / "signatures", out / "default", ignore=shutil.ignore_patterns("*.md"))
    return out


def engine_scan(ruleset: Any, image: Path, threads: int) -> set[RuleKey]:
    engine = Engine(EngineSettings(threads=threads))
    try:
        target = build_target(TargetSpec("memory", {"path": str(image), "format": "raw", "os": "physical"}))
        verdict = engine.scan(ruleset, target)
    finally:
        engine.close()
    cov = verdict.coverage
    if cov.bytes_scanned != cov.bytes_total:
        raise RuntimeError(f"engine scanned {cov.bytes_scanned} of {cov.bytes_total} bytes: {cov.gaps}")
    return {(f.namespace, f.rule) for f in verdict.findings}


def bench_ruleset(path: Path, data: bytes, image: Path, repeat: int, tmp: Path) -> bool:
    t0 = time.perf_counter()
    ruleset = compile_path(with_default_signatures(path, tmp))
    print(f"\n== {path} ({ruleset.rule_count} rules, compiled in {time.perf_counter() - t0:.1f} s)")
    mib = len(data) / MiB
    base_s, matches = best_of(repeat, lambda: ruleset.rules.match(data=data))
    baseline: set[RuleKey] = {(m.namespace, m.rule) for m in matches}
    print(f"{'run':<24}{'MiB/s':>9}{'ratio':>8}{'target':>8}  result   rules found")
    print(f"{'baseline rules.match':<24}{mib / base_s:>9.1f}{'1.00x':>8}{'':>8}  {'':<8} {len(baseline)}")
    ok = True
    for threads, target in TARGETS.items():
        secs, found = best_of(repeat, partial(engine_scan, ruleset, image, threads))
        ratio = base_s / secs
        verdict = "PASS" if ratio >= target else "MISS"
        ok = ok and ratio >= target
        print(
            f"{f'engine {threads} thread(s)':<24}{mib / secs:>9.1f}{ratio:>7.2f}x{target:>7.1f}x"
            f"  {verdict:<8} {len(found)}"
        )
        for label, diff in (("only in engine", found - baseline), ("only in baseline", baseline - found)):
            for ns, rule in sorted(diff):
                print(f"    {label}: {ns}:{rule}")
        if found != baseline:
            print(f"    findings DIFFER from the baseline ({threads} thread(s); see above)")
        ok = ok and found == baseline
    if not any(rule == "EICAR_Test_File" for _, rule in baseline):
        print("    the planted EICAR copies were not found: the comparison proves nothing")
        ok = False
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256, help="bytes of system files to scan")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs for every measurement")
    parser.add_argument(
        "--rulesets-dir",
        type=Path,
        default=DEFAULT_RULESETS_DIR,
        help="folder holding the public rule sets (default: %(default)s)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        image = Path(tmp) / "corpus.raw"
        files = write_corpus(image, args.size_mib * MiB)
        plant(image, args.size_mib * MiB)
        data = image.read_bytes()
        print(f"data: {len(data) / MiB:.0f} MiB from {files} system files")
        limits = physical_limits(data, args.repeat)
        for name, secs in limits:
            print(f"limit {name:<34}{len(data) / MiB / secs:>9.1f} MiB/s")
        print(
            f"machine 2-thread scaling (sha256): {limits[-2][1] / limits[-1][1]:.2f}x"
            f" (load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs)"
        )
        results = [bench_ruleset(args.rulesets_dir / rs, data, image, args.repeat, Path(tmp)) for rs in RULESETS]
    print("\nall targets met" if all(results) else "\nsome targets MISSED")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
