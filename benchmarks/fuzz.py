"""Fuzz every parser for a budget; report executions, crashes and hangs per parser.

``python -m benchmarks.fuzz [--seconds 60] [--hang 10] [--only NAME] [--keep]``

Each target of ``tests/fuzz/targets.py`` runs in its own child (``tests/fuzz/run.py``, atheris
over libFuzzer, coverage-guided on the scanner's and the parser packages' Python code), from a
seed corpus made at run time by other tools (mkfs, qemu-img, sgdisk). A crash is any exception
outside the documented ones; a hang is one input taking over ``--hang`` seconds. ``--keep``
copies crashers and hangs to ``tests/fuzz/crashers/<target>/``, where
``tests/fuzz/test_fuzz_regressions.py`` replays them. Exit status 1 if anything crashed or hung.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CRASHERS = REPO / "tests" / "fuzz" / "crashers"


@dataclass
class Result:
    name: str
    executions: int
    crashes: list[Path]
    hangs: list[Path]
    seconds: float
    note: str = ""


def run_one(name: str, seconds: int, hang: int, work: Path) -> Result:
    from tests.fuzz.targets import SEEDS

    corpus, artifacts, scratch = work / name / "corpus", work / name / "artifacts", work / name / "seeds"
    for d in (corpus, artifacts, scratch):
        d.mkdir(parents=True)
    for i, seed in enumerate(SEEDS[name](scratch)):
        (corpus / f"seed-{i}").write_bytes(seed)
    began = time.monotonic()
    cmd = [sys.executable, "-m", "tests.fuzz.run", name, str(corpus), str(artifacts), str(seconds), str(hang)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=seconds * 3 + 120, check=False)
    found = re.findall(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
    crashes = sorted(p for p in artifacts.iterdir() if p.name.startswith(("crash-", "oom-", "leak-")))
    hangs = sorted(p for p in artifacts.iterdir() if p.name.startswith(("timeout-", "slow-unit-")))
    note = "" if found or crashes or hangs else proc.stderr.strip().splitlines()[-1:][0] if proc.stderr.strip() else "?"
    return Result(name, int(found[-1]) if found else 0, crashes, hangs, time.monotonic() - began, note)


def main() -> int:
    from tests.fuzz.targets import TARGETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--hang", type=int, default=10)
    parser.add_argument("--only", action="append", choices=sorted(TARGETS))
    parser.add_argument("--keep", action="store_true", help="copy crashers into tests/fuzz/crashers/")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="avscan-fuzz-") as tmp:
        for name in args.only or list(TARGETS):
            result = run_one(name, args.seconds, args.hang, Path(tmp))
            results.append(result)
            if args.keep:
                for artifact in result.crashes + result.hangs:
                    (CRASHERS / name).mkdir(parents=True, exist_ok=True)
                    shutil.copy(artifact, CRASHERS / name / artifact.name)
            print(
                f"{name:<12} {result.executions:>9} executions  {len(result.crashes)} crashes  "
                f"{len(result.hangs)} hangs  {result.seconds:6.0f} s  {result.note}",
                flush=True,
            )
    bad = [r for r in results if r.crashes or r.hangs or not r.executions]
    print("PASS" if not bad else f"MISS: {', '.join(r.name for r in bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
