"""What scanning page seams adds to the default memory scan (``os=auto``), same dump, same run.

Boots a lab guest (``--guest distro``: the Debian guest, 1 GiB; default the busybox one), pauses
it and writes a raw dump (or takes ``--dump``), fills the profile cache once (not counted: the
appliance's steady state), then times, alternating, ``--repeat`` times each (best kept):
- **baseline**: the default target with seams off (physical scan of all RAM + attribution);
- **with seams**: the default target (:mod:`scanner.targets.seams`).
Also timed alone: finding the kernel (profile cached) and the seam walk. All twice: with the
shipped signatures (the lab's markers match, so the baseline opens the kernel for attribution
anyway) and with a rule that matches nothing (a clean scan: the baseline never looks for the
kernel; the seams need it and the process walk). Prints the seams found, the YARA calls the seam
batches cost, and the ratio with seams / baseline: PASS when at most ``TARGET``.

    python -m benchmarks.seam_scan [--guest busybox|distro] [--dump RAW] [--threads 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.acquisition.memory.raw import RawMemory
from scanner.engine import Engine, EngineSettings
from scanner.guestos.linux.detect import open_linux
from scanner.guestos.linux.seams import find_seams
from scanner.lab import LabGuest
from scanner.lab.distro import DistroGuest
from scanner.rulesets import LoadedRuleset, compile_path
from scanner.targets.awareness import AttributedMemoryTarget
from scanner.targets.seams import max_seams_for

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.25  # the seams may cost at most a quarter of the default scan


class _CountingRules:
    """yara.Rules that counts ``match`` calls (the engine's only call into libyara)."""

    def __init__(self, rules: Any) -> None:
        self.rules, self.calls = rules, 0

    def match(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.rules.match(*args, **kwargs)


@dataclass(frozen=True)
class _Counted:
    digest: str
    rules: _CountingRules
    externals: Mapping[str, str]


def timed(dump: Path, rules: LoadedRuleset, threads: int, cache: Path, seams: bool) -> tuple[float, int, Any]:
    counted = _Counted(rules.digest, _CountingRules(rules.rules), rules.externals)
    engine = Engine(EngineSettings(threads=threads))
    try:
        began = time.perf_counter()
        verdict = engine.scan(counted, AttributedMemoryTarget(RawMemory(str(dump)), profile_cache=cache, seams=seams))
        seconds = time.perf_counter() - began
    finally:
        engine.close()
    return seconds, counted.rules.calls, verdict


def dumped(guest: str, work: Path) -> Path:
    boot = DistroGuest.boot if guest == "distro" else lambda: LabGuest.start(memory_mib=256, markers=2)
    with boot() as g:
        g.pause()
        g.dump_raw(work / "guest.raw")
    return work / "guest.raw"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guest", choices=("busybox", "distro"), default="busybox")
    parser.add_argument("--dump", type=Path, help="a raw dump of a lab guest to use instead of booting one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rules = compile_path(REPO_ROOT / "signatures")
    with tempfile.TemporaryDirectory(prefix="avscan-bench-") as tmp:
        work = Path(tmp)
        dump = args.dump or dumped(args.guest, work)
        dump_mib = dump.stat().st_size >> 20
        cache = work / "profiles"
        timed(dump, rules, args.threads, cache, seams=True)  # fills the profile cache: not counted
        began = time.perf_counter()
        kernel = open_linux(RawMemory(str(dump)), profile_cache=cache).kernel
        opened = time.perf_counter() - began
        assert kernel is not None
        began = time.perf_counter()
        found = find_seams(kernel, max_seams_for(kernel.source))
        walk = time.perf_counter() - began
        never = work / "never"
        never.mkdir()
        (never / "never.yar").write_text('rule Never { strings: $a = "avscan-never-present-51c7" condition: $a }\n')
        results = {}
        for label, ruleset in (("shipped signatures", rules), ("no match (clean scan)", compile_path(never))):
            best: dict[bool, tuple[float, int, Any]] = {}
            for _ in range(args.repeat):
                for seams in (False, True):
                    got = timed(dump, ruleset, args.threads, cache, seams)
                    if seams not in best or got[0] < best[seams][0]:
                        best[seams] = got
            results[label] = best
    mapped = sum(s.mapped for s in found.seams.values())
    print(f"guest: {args.guest}, dump {dump_mib} MiB, threads {args.threads}, best of {args.repeat}")
    print(f"kernel found in memory (profile cached) in {opened:.2f}s: the baseline skips it when nothing matches")
    print(f"seams: {len(found.seams)} distinct ({mapped} mappings in {found.listed} processes), walk {walk:.2f}s")
    ok = True
    for label, best in results.items():
        (base, base_calls, _), (with_seams, calls, verdict) = best[False], best[True]
        ratio = with_seams / base
        ok = ok and ratio <= TARGET
        print(f"{label}: verdict {verdict.kind.value}, accounting {dict(verdict.coverage.accounting)}")
        print(f"  baseline (os=auto, seams off): {base:7.2f}s  {base_calls} yara calls")
        print(f"  with seams (os=auto default):  {with_seams:7.2f}s  {calls} yara calls (+{calls - base_calls})")
        mark = "PASS" if ratio <= TARGET else "MISS"
        print(f"  ratio with seams / baseline: {ratio:.2f}x (target <= {TARGET}x): {mark}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
