"""Peak resident memory of a scan of a 2 GiB raw memory image, measured in a child process.

The image is real bytes on disk (no sparse holes): 1 MiB blocks cycling through random data, two
blocks of system libraries and a block of written zeros. Two children run, each reporting its
own peak RSS (``VmHWM``, its own pages only, not the rule compiler it starts): one that only
imports the scanner and compiles the default rules (``signatures/``), and one that also scans the
image with the engine on 2 threads. Target: the scanning child stays under 300 MiB.
Run: ``python -m benchmarks.memory_rss``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.corpus import REPO_ROOT, MiB, write_corpus

TARGET_MIB = 300
POOL_MIB = 64  # distinct library bytes cycled through the image


def peak_rss_mib() -> float:
    """This process's own peak resident set (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(image: str | None) -> None:
    """Compile the default rules and, given an image, scan it; print one JSON line."""
    from scanner.engine import Engine, EngineSettings
    from scanner.rulesets import compile_path
    from scanner.targets import TargetSpec, build_target

    ruleset = compile_path(REPO_ROOT / "signatures")
    report: dict[str, Any] = {"rules": ruleset.rule_count}
    if image:
        engine = Engine(EngineSettings(threads=2))
        t0 = time.perf_counter()
        verdict = engine.scan(ruleset, build_target(TargetSpec("memory", {"path": image, "format": "raw"})))
        engine.close()
        report.update(
            seconds=time.perf_counter() - t0,
            kind=verdict.kind.name,
            scanned=verdict.coverage.bytes_scanned,
            total=verdict.coverage.bytes_total,
            findings=len(verdict.findings),
        )
    report["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(report))


def run_child(image: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.memory_rss", "--child"] + ([str(image)] if image else [])
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.splitlines()[-1]))


def write_image(path: Path, size: int, pool: bytes) -> None:
    """``size`` bytes: per 4 MiB, 1 MiB random, 2 MiB of library bytes, 1 MiB of written zeros."""
    zeros = bytes(MiB)
    with path.open("wb") as f:
        for i in range(size // MiB):
            if i % 4 == 0:
                f.write(os.urandom(MiB))
            elif i % 4 == 3:
                f.write(zeros)
            else:
                at = (i * MiB) % (len(pool) - MiB)
                f.write(pool[at : at + MiB])
    allocated = path.stat().st_blocks * 512
    if allocated < size:
        raise RuntimeError(f"image is sparse: {allocated} of {size} bytes allocated")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=2048, help="image size (default 2 GiB)")
    parser.add_argument("--child", nargs="?", const="", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child or None)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-rss-", dir="/tmp") as tmp:
        pool_path, image = Path(tmp) / "pool", Path(tmp) / "memory.raw"
        write_corpus(pool_path, POOL_MIB * MiB)
        write_image(image, args.size_mib * MiB, pool_path.read_bytes())
        base = run_child(None)
        scan = run_child(image)
    cost = scan["peak_rss_mib"] - base["peak_rss_mib"]
    ok = scan["peak_rss_mib"] < TARGET_MIB and scan["scanned"] == scan["total"]
    print(f"image: {args.size_mib} MiB raw, {base['rules']} default rules, engine threads=2")
    scanned, total = scan["scanned"] / MiB, scan["total"] / MiB
    print(
        f"scan: {scan['seconds']:.1f} s, {scanned:.0f} of {total:.0f} MiB scanned,"
        f" verdict {scan['kind']}, {scan['findings']} findings"
    )
    print(f"{'child':<34}{'peak RSS MiB':>13}")
    print(f"{'import + compile rules (baseline)':<34}{base['peak_rss_mib']:>13.1f}")
    print(f"{'import + compile + scan':<34}{scan['peak_rss_mib']:>13.1f}")
    print(f"{'scan own cost':<34}{cost:>13.1f}")
    print(f"target: scanning child < {TARGET_MIB} MiB -> {'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
