"""Live scan of lab guests that have used their RAM vs dump over QMP + the `yara` CLI.

For each size (default 512, 2048 and 4096 MiB) boots a lab guest whose init first fills all but
128 MiB + 1/16 of its RAM with random bytes (then frees them: the RAM keeps them, as in a guest that has
used its memory), with two marker processes, RAM in a shared file. In the same run, on that guest:

- **baseline**: QMP ``dump-guest-memory`` (QEMU stops the guest while it dumps), then the
  ``yara`` CLI over the dump with the same rules precompiled by ``yarac``;
- **avscan live, cold / warm**: the default live scan (``os=auto``, guest running, RAM read as
  QEMU lays it out, shared RAM through its file) with an empty, then a filled kernel-profile cache;
- **file vs process**: the same scan with every range read through ``/proc/PID/mem`` instead of
  the RAM file (the path a plain ``-m`` guest takes);
- **paused**: the warm scan with the guest paused; its pause is compared with the dump's.

Prints time, pause, ratio to the baseline and throughput per size (it must stay flat: time grows
linearly with RAM), each target with PASS or MISS. Exit 0 only when every target is met.

    python -m benchmarks.live_guest [--sizes 512,2048,4096] [--rules PATH] [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.corpus import DEFAULT_RULESETS_DIR, REPO_ROOT
from scanner.engine import Engine, EngineSettings
from scanner.lab import LabGuest
from scanner.rulesets import compile_path
from scanner.targets import TargetSpec, build_target


def keep_free_mib(size: int) -> int:
    """What the fill leaves for the guest's kernel, initramfs and processes."""
    return 128 + size // 16


TARGET_WARM, TARGET_COLD, TARGET_PROCESS = 4.0, 2.0, 0.8


@dataclass(frozen=True)
class Row:
    name: str
    seconds: float
    pause: float
    found: bool
    cpu: float  # CPU seconds of the scanning process(es): yara's for the baseline, ours for the rest


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def rule_files(rules_dir: Path) -> list[Path]:
    files = sorted(p for p in rules_dir.rglob("*") if p.suffix in (".yar", ".yara"))
    return files + sorted((REPO_ROOT / "signatures").rglob("*.yar"))


def baseline(guest: LabGuest, compiled: Path, work: Path) -> Row:
    """Dump + yara CLI; the pause is the dump (QEMU stops the guest until it is written)."""
    dump = work / "guest.elf"
    began = time.perf_counter()
    guest.dump_elf(dump, timeout=600)
    dumped = time.perf_counter()
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["yara", "-C", "-p", "2", str(compiled), str(dump)], capture_output=True, text=True, check=False
    )
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
    total = time.perf_counter() - began
    if out.returncode not in (0, 1):
        raise SystemExit(f"yara failed: {out.stderr}")
    dump.unlink()
    return Row("dump (QMP) + yara CLI", total, dumped - began, "EICAR_Test_File" in out.stdout, cpu)


def ours(name: str, guest: LabGuest, rules: Any, threads: int, profiles: Path, **params: Any) -> Row:
    spec = TargetSpec("guest", {"qmp": str(guest.scanner_qmp_path), "max_pause_seconds": 600, **params})
    engine = Engine(EngineSettings(threads=threads))
    try:
        began, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
        with build_target(spec, profile_cache=profiles) as target:
            verdict = engine.scan(rules, target)
        total, cpu = time.perf_counter() - began, cpu_seconds(resource.RUSAGE_SELF) - cpu
    finally:
        engine.close()
    if not verdict.coverage.complete:
        raise SystemExit(f"{name}: incomplete scan: {[g.detail for g in verdict.coverage.gaps][:3]}")
    pause = float(verdict.details.get("paused_seconds", 0.0))
    return Row(name, total, pause, any(f.rule == "EICAR_Test_File" for f in verdict.findings), cpu)


def measure(size: int, rules: Any, compiled: Path, work: Path, threads: int) -> list[Row]:
    profiles = work / f"profiles-{size}"
    began = time.perf_counter()
    with LabGuest.start(
        memory_mib=size, markers=2, variant=f"bench{size}", fill_mib=size - keep_free_mib(size), timeout=1800
    ) as guest:
        print(f"{size} MiB guest booted and filled under {guest.accel} in {time.perf_counter() - began:.0f} s")
        return [
            baseline(guest, compiled, work),
            ours("avscan live, cold profile cache", guest, rules, threads, profiles),
            ours("avscan live, warm profile cache", guest, rules, threads, profiles),
            ours("avscan live, RAM file path", guest, rules, threads, profiles, os="physical"),
            ours("avscan live, process path", guest, rules, threads, profiles, os="physical", access="process"),
            ours("avscan live, paused", guest, rules, threads, profiles, consistency="paused"),
        ]


def report(size: int, rows: list[Row]) -> bool:
    by = {r.name: r for r in rows}
    base = rows[0]
    print(f"\n{size} MiB guest, RAM filled:")
    print(f"{'method':36} {'time s':>8} {'pause s':>8} {'vs base':>8} {'MiB/s':>8} {'cpu s':>7}  marker")
    for r in rows:
        print(
            f"{r.name:36} {r.seconds:8.2f} {r.pause:8.2f} {base.seconds / r.seconds:7.2f}x {size / r.seconds:8.0f} "
            f"{r.cpu:7.2f}  {'found' if r.found else 'MISSED'}"
        )
    warm = base.seconds / by["avscan live, warm profile cache"].seconds
    cold = base.seconds / by["avscan live, cold profile cache"].seconds
    proc = by["avscan live, RAM file path"].seconds / by["avscan live, process path"].seconds
    paused = by["avscan live, paused"].pause
    checks = [
        (f"live warm vs baseline {warm:.2f}x (target >= {TARGET_WARM}x)", warm >= TARGET_WARM),
        (f"live cold vs baseline {cold:.2f}x (target >= {TARGET_COLD}x)", cold >= TARGET_COLD),
        (f"process path vs file path {proc:.2f}x (target >= {TARGET_PROCESS}x)", proc >= TARGET_PROCESS),
        (f"paused {paused:.2f} s vs dump pause {base.pause:.2f} s (target: not longer)", paused <= base.pause),
        ("marker found by every method", all(r.found for r in rows)),
    ]
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {text}")
    warm_cpu = by["avscan live, warm profile cache"].cpu
    print(
        f"  info  CPU per byte: yara {base.cpu:.2f} s, warm live scan {warm_cpu:.2f} s (both threads), "
        f"{base.cpu / warm_cpu:.2f}x; the dump's CPU (QEMU's) is not counted"
    )
    return all(ok for _, ok in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512,2048,4096", help="guest RAM sizes in MiB, comma-separated")
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULESETS_DIR / "elastic-protections-artifacts" / "rules")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    for tool in ("yara", "yarac"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs the {tool} command (Debian package yara)")
    files = rule_files(args.rules)
    ok = True
    throughput: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="avscan-bench-") as tmp:
        work = Path(tmp)
        sources = work / "rules"
        sources.mkdir()
        for i, f in enumerate(files):  # same sources for both, flattened to unique names
            (sources / f"{i:05d}_{f.name}").write_bytes(f.read_bytes())
        compiled = work / "rules.yarc"
        made = subprocess.run(
            ["yarac", *sorted(map(str, sources.iterdir())), str(compiled)], capture_output=True, text=True, check=False
        )
        if made.returncode != 0:
            raise SystemExit(f"yarac failed: {made.stderr[-2000:]}")
        rules = compile_path(sources)
        print(f"rules: {rules.rule_count} ({args.rules.name} + default signatures); sizes {sizes} MiB")
        for size in sizes:
            rows = measure(size, rules, compiled, work, args.threads)
            ok = report(size, rows) and ok
            throughput.append((size, size / rows[2].seconds))
    print("\nthroughput of the warm live scan by guest size (flat = linear time):")
    for size, mibs in throughput:
        print(f"  {size:6d} MiB  {mibs:8.0f} MiB/s  {mibs / throughput[0][1]:5.2f}x the smallest")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
