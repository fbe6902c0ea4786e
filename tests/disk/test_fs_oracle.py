"""Ground truth from others: every image read by avscan and by the kernel's own driver.

Each image is made by ``mkfs.*`` (with the tree put in by ``mkfs -d`` or by the kernel through a
read-write loop mount), then mounted read-only: avscan must offer the same regular files with the
same bytes (SHA-256), with no gap, every allocated file reached by name, and the same findings as
``yara -r`` on the mounted tree.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.disk import images
from tests.disk.conftest import need
from tests.disk.images import MiB, run
from tests.disk.oracle import avscan_read, kernel_files, kernel_yara, mounted, recovered
from tests.disk.scanning import scan
from tests.support.samples import eicar, marker

NON_UTF8 = b"bad-\xff\xfe-name.com"


def corpus(root: Path, *, fat: bool = False) -> Path:
    """The disk samples plus what the ext features under test store differently: files of 0-200
    bytes (inline data: 60 bytes in the inode, the rest in an attribute), a small directory
    (an inline directory), many entries (a hashed directory), a name that is not UTF-8."""
    images.populate(root)
    if fat:  # no symbolic links on FAT, and its names are text
        (root / "bin" / "link-to-eicar").unlink()
    else:
        (root / os.fsdecode(NON_UTF8)).write_bytes(eicar())
    small = root / "small"
    small.mkdir()
    for size in (1, 40, 59, 60, 61, 100, 150, 200):
        data = (marker("DISK") + b"." * size)[-size:] if size >= 40 else b"s" * size
        (small / f"s{size}.bin").write_bytes(data)
    (root / "tiny-dir").mkdir()
    (root / "tiny-dir" / "m.txt").write_bytes(marker("DISK"))
    many = root / "many"
    many.mkdir()
    for n in range(300):
        (many / f"entry-with-a-long-name-{n:04}.txt").write_bytes(b"%d\n" % n)
    return root


def by_mkfs_d(*mkfs: str) -> Callable[[Path, Path], Path]:
    def build(src: Path, out: Path) -> Path:
        run(*mkfs, "-q", "-F", "-E", "root_owner=0:0", "-d", src, out, "48M")
        return out

    return build


def by_kernel(*mkfs: str) -> Callable[[Path, Path], Path]:
    """``mkfs`` on an empty image, then the tree copied in by the kernel (a loop mount)."""

    def build(src: Path, out: Path) -> Path:
        with out.open("wb") as f:
            f.truncate(320 * MiB if mkfs[0] == "mkfs.xfs" else 48 * MiB)
        run(*mkfs, out)
        mnt = out.with_suffix(".mnt")
        mnt.mkdir()
        run("mount", "-o", "loop", out, mnt)
        try:
            run("cp", "-a", f"{src}/.", mnt)
        finally:
            run("umount", mnt)
            mnt.rmdir()
        return out

    return build


def by_mcopy(src: Path, out: Path) -> Path:
    run("mkfs.vfat", "-F", "32", "-C", out, str(48 * 1024))
    run("mcopy", "-s", "-i", out, *(str(p) for p in sorted(src.iterdir())), "::/")
    return out


IMAGES: dict[str, tuple[Callable[[Path, Path], Path], tuple[str, ...]]] = {
    # name: (builder, mount options; None: The Sleuth Kit reads it, the kernel here has no driver)
    "ext2-mkfs": (by_mkfs_d("mkfs.ext2"), ()),
    "ext2-rev0-kernel": (by_kernel("mkfs.ext2", "-q", "-F", "-r", "0"), ()),  # no file types, 128-byte inodes
    "ext3-kernel": (by_kernel("mkfs.ext3", "-q", "-F"), ()),
    "ext4-minimal-kernel": (
        by_kernel("mkfs.ext4", "-q", "-F", "-I", "128", "-O", "^metadata_csum,^64bit,^flex_bg"),
        (),
    ),
    "ext4-mkfs": (by_mkfs_d("mkfs.ext4"), ()),
    "ext4-kernel-1k": (by_kernel("mkfs.ext4", "-q", "-F", "-b", "1024"), ()),
    "ext4-inline_data": (by_kernel("mkfs.ext4", "-q", "-F", "-O", "inline_data"), ()),
    "ext4-inline_data-mkfs": (by_mkfs_d("mkfs.ext4", "-O", "inline_data"), ()),
    "ext4-bigalloc": (by_kernel("mkfs.ext4", "-q", "-F", "-O", "bigalloc", "-C", "16384"), ()),
    "xfs-kernel": (by_kernel("mkfs.xfs", "-q", "-f"), ("norecovery",)),
    "vfat-mtools": (by_mcopy, ("tsk",)),
}


def _ascii(path: str) -> str:
    return "".join(c if ord(c) < 128 else "^" for c in path)


def as_tsk_recovers(files: dict[str, str]) -> dict[str, str]:
    """Files as ``tsk_recover`` writes them: no empty files, and a non-ASCII letter ``^`` where it
    reads an 8.3 name in the OEM code page (the kernel and avscan read it as cp437 text)."""
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    return {_ascii(path): digest for path, digest in files.items() if digest != empty}


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "disk.yar"
    path.write_text(images.rules_source())
    return path


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_avscan_reads_what_the_kernel_reads(name, tmp_path, rules, engine, ruleset):
    build, options = IMAGES[name]
    need("yara", "mkfs.ext4", "mkfs.xfs", "mkfs.vfat", "mcopy", "tsk_recover")
    src = corpus(tmp_path / "src", fat=name.startswith("vfat"))
    image = build(src, tmp_path / f"{name}.img")
    reader = recovered(image) if options == ("tsk",) else mounted(image, *options)
    with reader as mnt:
        truth, truth_found = kernel_files(mnt), kernel_yara(rules, mnt)
    assert len(truth) > 300 and truth_found
    allocated = len(truth)  # regular files the kernel lists (no hard links in the corpus)

    read = avscan_read(image)
    if options == ("tsk",):
        read.files, truth = as_tsk_recovers(read.files), as_tsk_recovers(truth)
    assert read.paths() == truth
    assert not read.gaps, read.gaps
    verdict = scan(engine, ruleset, path=str(image))
    ours = {(f.rule, f.context["path"]) for f in verdict.findings}
    if options == ("tsk",):
        ours = {(rule, _ascii(path)) for rule, path in ours}
        truth_found = {(rule, _ascii(path)) for rule, path in truth_found}
    assert ours == truth_found
    assert verdict.coverage.complete, verdict.coverage.gaps
    if read.accounting.get("disk.sweep"):  # every allocated file (no hard links here) reached by name
        assert read.accounting["disk.files_allocated"] == read.accounting["disk.files_reached"] == allocated
        assert read.accounting["disk.files_orphaned"] == 0


def test_the_tree_has_what_the_features_need(tmp_path):
    """The corpus really exercises inline data: debugfs shows inline files and an inline directory."""
    need("debugfs")
    image = IMAGES["ext4-inline_data"][0](corpus(tmp_path / "src"), tmp_path / "i.img")
    assert "Size of inline data: " in run("debugfs", "-R", "stat /small/s100.bin", image)
    assert "Size of inline data: " in run("debugfs", "-R", "stat /tiny-dir", image)
    assert shutil.which("mkfs.ext4")
