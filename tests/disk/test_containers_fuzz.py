"""Seeded bit flips and truncations of VMDK (sparse, stream-optimized), qcow2 (plain; subclusters
with zstd), VHD, VDI and VHDX images (issue 11).

For every damaged image the scan must end in a verdict (never an exception: the CLI's traceback
and exit 1 "found" with nothing found), a MALICIOUS verdict must carry its finding, and a CLEAN
verdict with complete coverage is only allowed when the independent reader cannot read the
marker either: ``qemu-img convert`` back to raw, then ``debugfs -R 'cat /marker.txt'``.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from scanner.verdicts import VerdictKind
from tests.disk import images
from tests.disk.conftest import need
from tests.disk.scanning import scan
from tests.support.samples import marker

CASES = 120  # per format: 840 in all, a few milliseconds each
FORMATS = {
    "vmdk-sparse": ("vmdk", ("-o", "subformat=monolithicSparse")),
    "vmdk-stream": ("vmdk", ("-o", "subformat=streamOptimized")),
    "qcow2": ("qcow2", ()),
    "qcow2-extl2-zstd": ("qcow2", ("-c", "-o", "extended_l2=on,compression_type=zstd")),
    "vhd": ("vpc", ()),
    "vdi": ("vdi", ()),
    "vhdx": ("vhdx", ()),
}


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 MiB raw ext4 holding ``/marker.txt`` (the rule ``Marker_DISK`` matches it)."""
    need("mkfs.ext4", "qemu-img", "debugfs")
    root = tmp_path_factory.mktemp("fuzz")
    src = root / "src"
    src.mkdir()
    (src / "marker.txt").write_bytes(b"head " + marker("DISK") + b" tail\n")
    (src / "filler.txt").write_bytes(b"filler\n" * 3000)
    return images.ext4(src, root / "marked.img", 4)


def damaged(data: bytes, rng: random.Random) -> bytes:
    """Truncated (one case in four), or one bit of the marker itself flipped (one in ten, where the
    container stores it plainly: then CLEAN is right and the oracle must agree), or 1..8 bits
    flipped, mostly in the first 256 KiB (headers, tables)."""
    if rng.random() < 0.25:
        return data[: rng.randrange(0, len(data))]
    out = bytearray(data)
    at = data.find(marker("DISK"))
    if at >= 0 and rng.random() < 0.1:
        out[at + rng.randrange(len(marker("DISK")))] ^= 1 << rng.randrange(8)
        return bytes(out)
    for _ in range(rng.randint(1, 8)):
        span = min(len(out), 256 * 1024) if rng.random() < 0.8 else len(out)
        out[rng.randrange(span)] ^= 1 << rng.randrange(8)
    return bytes(out)


def marker_readable(image: Path, fmt: str) -> bool:
    """Does the independent reader (qemu-img + debugfs) still read the marker?"""
    raw = image.with_suffix(".oracle.raw")
    done = subprocess.run(
        ["qemu-img", "convert", "-q", "-f", fmt, "-O", "raw", image, raw], capture_output=True, check=False
    )
    if done.returncode != 0:
        return False
    cat = subprocess.run(["debugfs", "-R", "cat /marker.txt", raw], capture_output=True, check=False)
    return marker("DISK") in cat.stdout


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_damaged_containers_never_crash_and_never_hide_a_readable_marker(name, marked, tmp_path, engine, ruleset):
    fmt, options = FORMATS[name]
    original = images.convert(marked, tmp_path / f"pristine.{fmt}", fmt, *options)
    assert marker_readable(original, fmt)  # the oracle reads the undamaged image
    pristine = original.read_bytes()
    rng = random.Random(f"avscan-fuzz-{name}")  # seeded: the same cases every run
    kinds: dict[str, int] = {}
    for case in range(CASES):
        image = tmp_path / f"case{case}.{fmt}"
        image.write_bytes(damaged(pristine, rng))
        verdict = scan(engine, ruleset, path=str(image))  # an exception here is the bug
        kinds[verdict.kind.value] = kinds.get(verdict.kind.value, 0) + 1
        if verdict.kind is VerdictKind.MALICIOUS:
            assert verdict.findings, (case, verdict)
        if verdict.kind is VerdictKind.ERROR:
            assert verdict.error and "\n" not in verdict.error, (case, verdict.error)
        if verdict.kind is VerdictKind.CLEAN and verdict.coverage.complete:
            assert not marker_readable(image, fmt), f"case {case}: CLEAN and complete, the marker is readable"
        image.unlink()
    assert sum(kinds.values()) == CASES and kinds.get("MALICIOUS", 0) > 0, kinds  # some damage is harmless
    assert kinds.get("CLEAN", 0) > 0 or marker("DISK") not in pristine, kinds  # the oracle branch ran
