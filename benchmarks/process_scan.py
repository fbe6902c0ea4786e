"""Process-aware scan of a lab guest vs Volatility 3's ``linux.vmayarascan``, same rules, same dump.

Boots a lab guest (default 256 MiB, 2 marker processes), pauses it, writes a raw dump, then in
the same run times:
- **volatility**: ``vol linux.vmayarascan`` on the dump with our ISF (``-s``) and the default
  signatures precompiled (``--yara-compiled-file``), so rule compilation is not counted; it
  walks every process's VMAs itself (symbol-table and banner cache warmed by one pslist run first);
- **avscan, cold**: :func:`scanner.targets.processes.process_target` + the engine on the same
  dump, no profile cache (find banner and BTF in memory, parse BTF, find init_task, walk);
- **avscan, cached**: the same with the profile cache filled (the appliance's steady state).
Prints time of each and the ratio to Volatility, and checks that all found the marker processes.
``--guest distro`` uses the Debian distribution guest instead (:mod:`scanner.lab.distro`: systemd,
1 GiB, 2 vCPUs, ~65 processes, ~1250 VMAs); its target is the cached run >= 5x Volatility.

    python -m benchmarks.process_scan [--guest busybox|distro] [--memory-mib 256] [--threads 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scanner.acquisition.memory.raw import RawMemory
from scanner.engine import Engine, EngineSettings
from scanner.guestos.linux.detect import open_linux
from scanner.guestos.linux.isf import write_isf
from scanner.lab import LabGuest
from scanner.lab.distro import MEMORY_MIB, DistroGuest
from scanner.rulesets import compile_path
from scanner.targets.processes import process_target

REPO_ROOT = Path(__file__).resolve().parents[1]
DISTRO_TARGET = 5.0  # issue 12: the cached process scan of the distribution guest vs vmayarascan


def vol_command() -> str:
    vol = shutil.which("vol", path=os.path.dirname(sys.executable))
    if vol is None:
        raise SystemExit("volatility3 is not installed here: pip install volatility3")
    return vol


def volatility(dump: Path, symbols: Path, cache: Path, compiled: Path) -> tuple[float, set[int]]:
    common = [vol_command(), "-q", "-r", "csv", "-s", str(symbols), "--cache-path", str(cache), "-f", str(dump)]
    began = time.perf_counter()
    out = subprocess.run(
        [*common, "linux.vmayarascan.VmaYaraScan", "--yara-compiled-file", str(compiled)],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - began
    if out.returncode != 0:
        raise SystemExit(f"vol failed: {out.stderr[-2000:]}")
    pids = set()
    for line in out.stdout.splitlines()[1:]:
        cols = line.split(",")
        if "EICAR_Test_File" in line and len(cols) > 2 and cols[2].isdigit():
            pids.add(int(cols[2]))
    return seconds, pids


def ours(dump: Path, rules: object, threads: int, cache: Path | None) -> tuple[float, set[int]]:
    engine = Engine(EngineSettings(threads=threads))
    try:
        began = time.perf_counter()
        verdict = engine.scan(rules, process_target(RawMemory(str(dump)), profile_cache=cache))  # type: ignore[arg-type]
        seconds = time.perf_counter() - began
    finally:
        engine.close()
    pids = {int(f.context["pid"]) for f in verdict.findings if f.rule == "EICAR_Test_File" and f.context.get("pid")}
    return seconds, pids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guest", choices=("busybox", "distro"), default="busybox")
    parser.add_argument("--memory-mib", type=int, default=256, help="busybox guest only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    rules = compile_path(REPO_ROOT / "signatures")
    with tempfile.TemporaryDirectory(prefix="avscan-bench-") as tmp:
        work = Path(tmp)
        compiled = work / "rules.yarc"
        rules.rules.save(str(compiled))
        if args.guest == "distro":
            args.memory_mib = MEMORY_MIB
        boot = (
            DistroGuest.boot
            if args.guest == "distro"
            else lambda: LabGuest.start(memory_mib=args.memory_mib, markers=2)
        )
        with boot() as guest:
            guest.pause()
            dump = work / "guest.raw"
            guest.dump_raw(dump)
            markers = set(guest.marker_pids)
        detection = open_linux(RawMemory(str(dump)))
        assert detection.kernel is not None and detection.profile is not None, detection.reason
        write_isf(detection.profile, detection.kernel, work / "symbols")
        (work / "volcache").mkdir()
        subprocess.run(  # warm Volatility's banner and symbol caches: not counted
            [
                vol_command(),
                "-q",
                "-s",
                str(work / "symbols"),
                "--cache-path",
                str(work / "volcache"),
                "-f",
                str(dump),
                "linux.pslist.PsList",
            ],
            capture_output=True,
            check=True,
        )
        cache = work / "profiles"
        results: dict[str, tuple[float, set[int]]] = {}
        for _ in range(args.repeat):
            for name, run in (
                ("volatility vmayarascan", lambda: volatility(dump, work / "symbols", work / "volcache", compiled)),
                ("avscan processes, cold", lambda: ours(dump, rules, args.threads, None)),
                ("avscan processes, cached", lambda: ours(dump, rules, args.threads, cache)),
            ):
                if name.endswith("cached") and not cache.exists():
                    ours(dump, rules, args.threads, cache)  # fill the cache once, not counted
                got = run()
                if name not in results or got[0] < results[name][0]:
                    results[name] = got
    base = results["volatility vmayarascan"][0]
    ok = True
    print(
        f"guest: {args.guest} {args.memory_mib} MiB, markers {sorted(markers)};"
        f" threads {args.threads}; best of {args.repeat}"
    )
    for name, (seconds, pids) in results.items():
        found = pids == markers
        ok = ok and found
        print(f"{name:28s} {seconds:8.2f} s   {base / seconds:6.2f}x volatility   marker pids found: {sorted(pids)}")
    if args.guest == "distro":
        faster = base / results["avscan processes, cached"][0] >= DISTRO_TARGET
        print(f"target: avscan cached >= {DISTRO_TARGET:.0f}x volatility, every marker pid found by all:", end=" ")
    else:
        faster = all(results[n][0] < base for n in results if n.startswith("avscan"))
        print("target: avscan faster than volatility, every marker pid found by all:", end=" ")
    print("PASS" if ok and faster else "MISS")
    return 0 if ok and faster else 1


if __name__ == "__main__":
    sys.exit(main())
