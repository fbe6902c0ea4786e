"""Live scan of a lab guest vs the obvious alternative: dump its memory over QMP, run `yara` on it.

Boots a lab guest (default 512 MiB), then in the same run times:
- **alternative**: QMP ``dump-guest-memory`` to a file (QEMU pauses the guest while it dumps),
  then the ``yara`` command-line tool over the dump with the same rules (precompiled by ``yarac``
  so rule compilation is not counted);
- **avscan, running**: the engine on the live RAM through LibVMI, guest not paused;
- **avscan, paused**: the same with the guest paused for the scan (consistent view).
Prints time, guest pause time and the ratio to the alternative, and checks both found the marker.

    python -m benchmarks.live_guest [--memory-mib 512] [--rules PATH] [--threads 2]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.corpus import DEFAULT_RULESETS_DIR, REPO_ROOT
from scanner.engine import Engine, EngineSettings
from scanner.lab import LabGuest
from scanner.rulesets import compile_path
from scanner.targets import TargetSpec, build_target


def rule_files(rules_dir: Path) -> list[Path]:
    files = sorted(p for p in rules_dir.rglob("*") if p.suffix in (".yar", ".yara"))
    return files + sorted((REPO_ROOT / "signatures").rglob("*.yar"))


def alternative(guest: LabGuest, compiled: Path, work: Path) -> tuple[float, float, bool]:
    """(total seconds, pause seconds, marker found) for dump + yara CLI."""
    dump = work / "guest.elf"
    began = time.perf_counter()
    guest.dump_elf(dump)  # dump-guest-memory stops the guest until the dump completes
    dumped = time.perf_counter()
    out = subprocess.run(
        ["yara", "-C", "-p", "2", str(compiled), str(dump)], capture_output=True, text=True, check=False
    )
    total = time.perf_counter() - began
    if out.returncode not in (0, 1):
        raise SystemExit(f"yara failed: {out.stderr}")
    dump.unlink()
    return total, dumped - began, "EICAR_Test_File" in out.stdout


def ours(guest: LabGuest, rules: object, threads: int, paused: bool) -> tuple[float, float, bool]:
    params = {
        "qmp": str(guest.scanner_qmp_path),
        "consistency": "paused" if paused else "running",
        "max_pause_seconds": 600,
    }
    engine = Engine(EngineSettings(threads=threads))
    try:
        began = time.perf_counter()
        with build_target(TargetSpec("guest", params)) as target:
            verdict = engine.scan(rules, target)  # type: ignore[arg-type]
        total = time.perf_counter() - began
    finally:
        engine.close()
    pause = float(verdict.details.get("paused_seconds", 0.0))
    return total, pause, any(f.rule == "EICAR_Test_File" for f in verdict.findings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory-mib", type=int, default=512)
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULESETS_DIR / "elastic-protections-artifacts" / "rules")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for tool in ("yara", "yarac"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs the {tool} command (Debian package yara)")
    files = rule_files(args.rules)
    with tempfile.TemporaryDirectory(prefix="avscan-bench-") as tmp:
        work = Path(tmp)
        sources = work / "rules"
        for i, f in enumerate(files):  # same sources for both, flattened to unique names
            (sources / f"{i:05d}_{f.name}").parent.mkdir(exist_ok=True)
            (sources / f"{i:05d}_{f.name}").write_bytes(f.read_bytes())
        compiled = work / "rules.yarc"
        made = subprocess.run(
            ["yarac", *sorted(map(str, sources.iterdir())), str(compiled)], capture_output=True, text=True, check=False
        )
        if made.returncode != 0:  # rules needing externals (signature-base) need -d for yarac
            raise SystemExit(f"yarac failed: {made.stderr[-2000:]}")
        rules = compile_path(sources)
        print(f"rules: {rules.rule_count} ({args.rules.name} + default signatures); guest {args.memory_mib} MiB")
        with LabGuest.start(memory_mib=args.memory_mib, markers=2, variant="bench") as guest:
            print(f"guest booted under {guest.accel} in {guest.boot_seconds:.1f} s")
            rows = [
                ("dump (QMP) + yara CLI", *alternative(guest, compiled, work)),
                (f"avscan live, running ({args.threads}t)", *ours(guest, rules, args.threads, paused=False)),
                (f"avscan live, paused ({args.threads}t)", *ours(guest, rules, args.threads, paused=True)),
            ]
    base = rows[0][1]
    print(f"{'method':34} {'time s':>8} {'pause s':>8} {'speedup':>8}  marker")
    for name, total, pause, found in rows:
        print(f"{name:34} {total:8.2f} {pause:8.2f} {base / total:7.2f}x  {'found' if found else 'MISSED'}")
    return 0 if all(found for *_, found in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
