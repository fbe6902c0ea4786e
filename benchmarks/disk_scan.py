"""Disk images scanned from outside vs what a user does without avscan, same rules, same run.

Builds a ``--size-mib`` (default 2048) ext4 image (``mkfs.ext4 -d``) and NTFS image
(``mkfs.ntfs`` + ``ntfs-3g`` copy) filled with real files from /usr/lib and /usr/share, then times:

- **avscan**: ``Engine.scan`` of ``TargetSpec("disk", {"path": IMAGE})`` (2 threads), files read
  through the dissect parsers, nothing mounted;
- **extract + yara**: ext4 ``debugfs -R "rdump / DIR"``, NTFS the same parser path is not an
  alternative a user has, so ``ntfs-3g`` read-only FUSE mount + copy out; then ``yara -r -N -p 2``;
- **mount + yara**: loop mount (ext4, ``mount -o ro,loop``) or ``ntfs-3g -o ro`` (NTFS), then
  ``yara -r -N -p 2`` on the mount point (possible here because the sandbox runs as root with
  loop devices and /dev/fuse; skipped with the reason otherwise).

Prints seconds, the ratio of each alternative to avscan, and whether every tool found the same
(rule, path) pairs. Run: ``python -m benchmarks.disk_scan [--size-mib N] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from scanner.engine import Engine, EngineSettings
from scanner.rulesets import compile_path
from scanner.targets import TargetSpec, build_target
from tests.support.samples import eicar

REPO = Path(__file__).resolve().parents[1]
SIGNATURES = REPO / "signatures"
SOURCES = (Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/share"), Path("/usr/lib"))
MiB = 1 << 20


def fill(dst: Path, budget: int) -> int:
    """Copy regular files (< 64 MiB) from SOURCES into ``dst`` until ``budget`` bytes."""
    used = 0
    for src in SOURCES:
        for root, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(files):
                p = Path(root) / name
                if p.is_symlink() or not p.is_file():
                    continue
                size = p.stat().st_size
                if size > 64 * MiB or used + size > budget:
                    continue
                out = dst / p.relative_to("/")
                if out.exists():
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, out)
                used += size
            if used > budget * 0.97:
                return used
    return used


def sh(*cmd: str | Path) -> str:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True).stdout


def yara_cli(rule_files: list[Path], root: Path) -> set[tuple[str, str]]:
    done = subprocess.run(
        ["yara", "-r", "-N", "-p", "2", *map(str, rule_files), str(root)], capture_output=True, text=True, check=False
    )
    found = set()
    for line in done.stdout.splitlines():
        rule, _, path = line.partition(" ")
        found.add((rule, "/" + str(Path(path).relative_to(root))))
    return found


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def avscan(engine: Engine, ruleset, image: Path) -> set[tuple[str, str]]:
    with build_target(TargetSpec("disk", {"path": str(image)})) as target:
        verdict = engine.scan(ruleset, target)
    if not verdict.coverage.complete:
        print(f"  avscan coverage incomplete: {verdict.reason}")
    return {(f.rule, f.context["path"]) for f in verdict.findings}


def build(kind: str, tree: Path, image: Path, size_mib: int) -> None:
    if kind == "ext4":
        sh("mkfs.ext4", "-q", "-F", "-d", tree, image, f"{size_mib}M")
        return
    with image.open("wb") as f:
        f.truncate(size_mib * MiB)
    sh("mkfs.ntfs", "-q", "-F", "-f", image)
    mnt = image.with_suffix(".mnt")
    mnt.mkdir()
    sh("ntfs-3g", image, mnt)
    try:
        sh("cp", "-r", f"{tree}/.", mnt)
    finally:
        sh("umount", mnt)
        mnt.rmdir()


def extract_then_yara(kind: str, image: Path, work: Path, rules: list[Path]) -> set[tuple[str, str]]:
    out = work / f"extract-{kind}"
    out.mkdir()
    if kind == "ext4":
        sh("debugfs", "-R", f"rdump / {out}", image)
    else:
        mnt = work / "mnt-extract"
        mnt.mkdir()
        sh("ntfs-3g", "-o", "ro", image, mnt)
        try:
            sh("cp", "-r", f"{mnt}/.", out)
        finally:
            sh("umount", mnt)
    found = yara_cli(rules, out)
    shutil.rmtree(out)
    return found


def mount_then_yara(kind: str, image: Path, work: Path, rules: list[Path]) -> set[tuple[str, str]]:
    mnt = work / f"mnt-{kind}"
    mnt.mkdir(exist_ok=True)
    sh(*(("mount", "-o", "ro,loop", image, mnt) if kind == "ext4" else ("ntfs-3g", "-o", "ro", image, mnt)))
    try:
        return {(r, p) for r, p in yara_cli(rules, mnt) if not p.startswith("/lost+found")}
    finally:
        sh("umount", mnt)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the images in this directory")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="avscan-diskbench-"))
    work.mkdir(parents=True, exist_ok=True)
    rules = sorted(SIGNATURES.rglob("*.yar"))
    ruleset = compile_path(SIGNATURES)
    engine = Engine(EngineSettings(threads=2))
    can_mount = os.geteuid() == 0 and Path("/dev/loop-control").exists() and Path("/dev/fuse").exists()
    try:
        tree = work / "tree"
        if not tree.exists():
            tree.mkdir()
            used = fill(tree, int(args.size_mib * MiB * 0.8))
            (tree / "planted").mkdir()
            (tree / "planted" / "eicar.com").write_bytes(eicar())  # so "same findings" compares something
            print(f"tree: {used / MiB:.0f} MiB of files from {', '.join(map(str, SOURCES))}")
        for kind in ("ext4", "ntfs"):
            image = work / f"{kind}.img"
            if not image.exists():
                build(kind, tree, image, args.size_mib)
            sh("sync")
            t_av, f_av = timed(lambda image=image: avscan(engine, ruleset, image))
            print(f"{kind} {args.size_mib} MiB image: avscan {t_av:.1f}s ({len(f_av)} findings)")
            t_ex, f_ex = timed(lambda kind=kind, image=image: extract_then_yara(kind, image, work, rules))
            print(f"  extract + yara -r: {t_ex:.1f}s  ratio {t_ex / t_av:.2f}x avscan  same findings: {f_ex == f_av}")
            if can_mount:
                t_mo, f_mo = timed(lambda kind=kind, image=image: mount_then_yara(kind, image, work, rules))
                print(
                    f"  mount + yara -r:   {t_mo:.1f}s  ratio {t_mo / t_av:.2f}x avscan  same findings: {f_mo == f_av}"
                )
            else:
                print("  mount + yara -r: not possible here (needs root, loop devices and /dev/fuse)")
    finally:
        engine.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
