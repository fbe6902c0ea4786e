"""Damaged ext4 images never end CLEAN with complete coverage while ``debugfs`` still reads a marker.

A seeded, bounded fuzz: bit flips (mostly in the metadata at the start of the volume: superblock,
group descriptors, bitmaps, inode table, directory blocks) and truncations of one ``mkfs.ext4 -d``
image whose one marked file sits three directories deep. For every case that avscan calls CLEAN
and complete, e2fsprogs' ``debugfs`` (the independent reader) must not read the marker.
"""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

import pytest

from scanner.verdicts import VerdictKind
from tests.disk import images
from tests.disk.conftest import need
from tests.disk.scanning import scan
from tests.support.samples import marker

CASES = 240
SEED = 11
TREE = ("/m0.bin", "/a/m1.bin", "/a/b/m2.bin", "/a/b/c/m3.bin", "/z/m4.bin")
MARKED = "/a/b/c/m3.bin"  # the one file with the marker: losing it must not read as CLEAN


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[range], int]:
    """The image, its hot spots (the directory blocks, the used inode table), the marked inode."""
    need("mkfs.ext4", "debugfs")
    src = tmp_path_factory.mktemp("fuzz-src")
    for n, path in enumerate(TREE):
        target = src / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x" * (n * 700) + (marker("DISK") if path == MARKED else b"clean") + b"\n")
        (target.parent / f"clean{n}.txt").write_bytes(b"clean %d\n" % n * 50)
    out = tmp_path_factory.mktemp("fuzz") / "pristine.img"
    images.run("mkfs.ext4", "-q", "-F", "-b", "1024", "-E", "root_owner=0:0", "-d", src, out, "2M")
    hot = []
    for directory in ("/", "/a", "/a/b", "/a/b/c", "/z"):
        for block in images.run("debugfs", "-R", f"blocks {directory}", out).split():
            hot.append(range(int(block) * 1024, int(block) * 1024 + 1024))
    table = re.search(r"Inode table at (\d+)", images.run("dumpe2fs", out))
    assert table
    hot.append(range(int(table.group(1)) * 1024, int(table.group(1)) * 1024 + 32 * 256))  # inodes 1-32
    inode = int(re.search(r"Inode: (\d+)", images.run("debugfs", "-R", f"stat {MARKED}", out)).group(1))  # type: ignore[union-attr]
    return out.read_bytes(), hot, inode


def damage(data: bytes, hot: list[range], rng: random.Random) -> bytes:
    """A truncation (a tenth of the cases) or 1-4 bit flips, most in the hot spots."""
    if rng.random() < 0.1:
        return data[: rng.randrange(1024, len(data))]
    damaged = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        spot = rng.choice(hot) if rng.random() < 0.9 else range(len(data))
        damaged[rng.choice(spot)] ^= 1 << rng.randrange(8)
    return bytes(damaged)


def debugfs_reads_the_marker(image: Path, inode: int) -> bool:
    """The marked file's inode, read by number (no directory involved), is in use, a regular
    file, and holds the marker: nothing excuses missing it."""
    script = image.with_suffix(".cmds")
    script.write_text(f"testi <{inode}>\nstat <{inode}>\ncat <{inode}>\n")
    done = subprocess.run(["debugfs", "-f", str(script), str(image)], capture_output=True, check=False)
    out = done.stdout
    return b"is marked in use" in out and b"Type: regular" in out and marker("DISK") in out


def test_damaged_ext4_never_ends_clean_while_debugfs_reads_the_marker(pristine, tmp_path, engine, ruleset):
    data, hot, inode = pristine
    rng = random.Random(SEED)
    image = tmp_path / "case.img"
    verdicts: dict[VerdictKind, int] = {}
    for case in range(CASES):
        image.write_bytes(damage(data, hot, rng))
        verdict = scan(engine, ruleset, path=str(image))
        verdicts[verdict.kind] = verdicts.get(verdict.kind, 0) + 1
        if verdict.kind is VerdictKind.CLEAN and verdict.coverage.complete:
            assert not debugfs_reads_the_marker(image, inode), f"case {case}: CLEAN and complete, debugfs reads it"
    assert verdicts.get(VerdictKind.MALICIOUS, 0) > CASES // 2, verdicts  # most damage leaves the marker
