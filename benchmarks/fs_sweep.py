"""What the sweep by allocation costs: planning a disk (walk only) vs walk + sweep, same image, same run.

Builds ext4 (``mkfs.ext4 -d``) and XFS (kernel loop mount + copy; needs root) images holding
``--files`` small files in directories of 100, then times ``DiskTarget.plan()`` (no scanning: the
plan is where the walk and the sweep run) three times each way, alternating, and prints the best
times and the ratio. Run: ``python -m benchmarks.fs_sweep [--files N]``.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path
from unittest import mock

from scanner.targets.disk import DiskTarget


def build_tree(root: Path, files: int) -> None:
    for n in range(files):
        d = root / f"d{n // 100:04}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{n:06}.txt").write_bytes(b"%d\n" % n)


def build_images(work: Path, files: int) -> dict[str, Path]:
    src = work / "src"
    build_tree(src, files)
    ext4 = work / "ext4.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(src), str(ext4), "512M"], check=True)
    xfs = work / "xfs.img"
    with xfs.open("wb") as f:
        f.truncate(512 << 20)
    subprocess.run(["mkfs.xfs", "-q", "-f", str(xfs)], check=True)
    mnt = work / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(xfs), str(mnt)], check=True)
    try:
        subprocess.run(["cp", "-a", f"{src}/.", str(mnt)], check=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    return {"ext4": ext4, "xfs": xfs}


def plan_seconds(image: Path, sweep: bool) -> tuple[float, int]:
    start = time.perf_counter()
    with DiskTarget(str(image)) as target:
        if sweep:
            count = sum(1 for _ in target.plan())
        else:  # the baseline: the same plan with the sweep step left out
            with mock.patch.object(DiskTarget, "_sweep", lambda *_: iter(())):
                count = sum(1 for _ in target.plan())
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avscan-bench-sweep-") as tmp:
        images = build_images(Path(tmp), args.files)
        for name, image in images.items():
            walk, both = [], []
            for _ in range(3):
                walk.append(plan_seconds(image, sweep=False)[0])
                both.append(plan_seconds(image, sweep=True)[0])
            print(
                f"{name}: {args.files} files; plan walk only {min(walk):.2f} s, walk + sweep {min(both):.2f} s, "
                f"ratio {min(both) / min(walk):.2f}"
            )


if __name__ == "__main__":
    main()
