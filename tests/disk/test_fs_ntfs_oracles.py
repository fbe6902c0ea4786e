"""The NTFS reader against two independent ones on the same images: The Sleuth Kit (``fls``,
``icat``: its own NTFS code) and ntfs-3g (the FUSE driver, reading through the mount). Same files
and streams, same bytes (SHA-256), same findings as ``yara`` on what ntfs-3g reads. Images: a tree
written by ntfs-3g with streams, LZNT1-compressed and sparse files, hard links and a few hundred
directory entries.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from scanner.acquisition.disk.filesystems.ntfs import open_fs
from scanner.acquisition.disk.walk import GuestFile, Walker, WalkLimits
from scanner.verdicts import VerdictKind
from tests.disk import images, ntfs_images
from tests.disk.conftest import need, skip_or_fail
from tests.disk.ntfs_images import MARK
from tests.disk.scanning import found, scan
from tests.support.samples import eicar

COMPRESSED = 0x00000800  # FILE_ATTRIBUTE_COMPRESSED, set through ntfs-3g's system.ntfs_attrib_be


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def tree_image(disk_dir: Path, samples: Path) -> Path:
    """The sample tree plus streams, compression, sparseness, hard links and 300 entries."""
    need("mkntfs", "ntfs-3g", "fls", "icat", "ifind", "istat", "yara")
    if not images.ntfs_fuse_works():
        skip_or_fail("ntfs-3g needs /dev/fuse and root to write the tree")
    image = ntfs_images.blank(disk_dir / "ntfs-oracle.img", 48)
    staged = images.stage(samples, disk_dir / "ntfs-oracle-src", symlinks=False)
    with ntfs_images.mounted(image) as root:
        images.run("cp", "-r", f"{staged}/.", root)
        Path(f"{root}/readme.txt:notes").write_bytes(b"benign notes\n" * 400)
        Path(f"{root}/docs/marker.bin:second").write_bytes(b"z" * 70_000 + MARK)
        Path(f"{root}/docs:onthedir").write_bytes(eicar())
        Path(f"{root}/:onthe root").write_bytes(eicar())
        packed = root / "packed"
        packed.mkdir()
        os.setxattr(packed, "system.ntfs_attrib_be", COMPRESSED.to_bytes(4, "big"))
        (packed / "text.log").write_bytes((b"a compressible line of text\n" * 20_000) + MARK)
        with (root / "sparse.bin").open("wb") as f:
            f.seek(3 << 20)
            f.write(MARK)
        os.link(root / "eicar.com", root / "docs" / "eicar-hardlink.com")
        many = root / "many" / "entries"
        many.mkdir(parents=True)
        for i in range(300):
            (many / f"file-{i:03d}-with-a-long-name.txt").write_bytes(f"entry {i}\n".encode() * (i + 1))
    return image


def ours(image: Path) -> dict[str, str]:
    """path (``/dir/file`` or ``/dir/file:stream``) -> SHA-256, through the reader under test."""
    result = {}
    for item in Walker(WalkLimits()).walk(open_fs(image.open("rb"))):
        assert isinstance(item, GuestFile), item
        result[item.path] = sha(item.node.open().read())
    return result


def sleuthkit(image: Path) -> dict[str, str]:
    """The same map from The Sleuth Kit: ``fls -r -p -u`` lists, ``icat`` reads each stream."""
    result = {}
    for line in images.run("fls", "-r", "-p", "-u", image).splitlines():
        match = re.match(r"(\S+) (?:\* )?(\S+):\t(.*)$", line)
        assert match, f"fls line not understood: {line!r}"
        kind, address, path = match.groups()
        if kind[-1] != "r" or "/.:" in path or any(p.startswith("$") for p in path.split("/")):
            continue  # not file data; a directory's stream listed again under "."; metadata files
        result["/" + path.removeprefix(".")] = sha(_icat(image, address))  # ".:s": the root's stream
    return result


def _icat(image: Path, address: str) -> bytes:
    return subprocess.run(["icat", str(image), address], capture_output=True, check=True).stdout


def ntfs3g(mnt: Path) -> dict[str, str]:
    """The same map through an ntfs-3g mount (``streams_interface=windows``)."""
    result = {"/" + str(p.relative_to(mnt)): sha(p.read_bytes()) for p in mnt.rglob("*") if p.is_file()}
    result.update({guest: sha(opened.read_bytes()) for guest, opened in streams(mnt)})
    return result


def streams(mnt: Path) -> list[tuple[str, Path]]:
    """(guest path ``/dir/file:stream``, or ``/:stream`` for the root's, the path ntfs-3g opens)."""
    found = []
    for path in [mnt, *sorted(mnt.rglob("*"))]:
        for name in filter(None, os.getxattr(path, "ntfs.streams.list").decode().split("\0")):
            if path == mnt:  # the root directory's own stream
                found.append((f"/:{name}", Path(f"{mnt}/:{name}")))
            else:
                found.append((f"/{path.relative_to(mnt)}:{name}", Path(f"{path}:{name}")))
    return found


def yara_on_mount(rules: Path, mnt: Path) -> set[tuple[str, str]]:
    """``yara -r`` on the mounted tree, and ``yara`` on every stream opened by its Windows name."""
    truth = images.yara_truth(rules, mnt)
    for guest, opened in streams(mnt):
        truth |= {(line.split()[0], guest) for line in images.run("yara", "-N", rules, opened).splitlines()}
    return truth


def test_same_files_streams_and_bytes_as_sleuthkit_and_ntfs3g(tree_image):
    mine = ours(tree_image)
    with ntfs_images.mounted(tree_image, "ro") as mnt:
        fuse = ntfs3g(mnt)
    assert mine == sleuthkit(tree_image) == fuse
    assert {"/readme.txt:notes", "/docs:onthedir", "/:onthe root", "/packed/text.log", "/sparse.bin"} <= set(mine)
    assert len(mine) > 300
    assert "Compressed" in _data_attribute(tree_image, "/packed/text.log")  # LZNT1, as TSK sees it
    assert "Sparse" in _data_attribute(tree_image, "/sparse.bin")


def _data_attribute(image: Path, path: str) -> str:
    """TSK's ``istat`` line for the default $DATA attribute of ``path``."""
    record = images.run("ifind", "-n", path, image).split()[0]
    return next(line for line in images.run("istat", image, record).splitlines() if "$DATA (128-" in line)


def test_same_findings_as_yara_on_the_ntfs3g_mount(tree_image, rules_file, engine, ruleset):
    with ntfs_images.mounted(tree_image, "ro") as mnt:
        truth = yara_on_mount(rules_file, mnt)
    verdict = scan(engine, ruleset, path=str(tree_image))
    assert found(verdict) == truth
    assert {("Marker_DISK", "/docs/marker.bin:second"), ("EICAR_Test_File", "/docs:onthedir")} <= truth
    assert ("Marker_DISK", "/packed/text.log") in truth and ("Marker_DISK", "/sparse.bin") in truth
    assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete, verdict.coverage.gaps


def test_a_subtree_lost_from_the_index_is_still_reached_through_the_mft(disk_dir):
    """One bad B-tree child pointer: TSK (which reads every index block) still lists every file;
    libfsntfs' descent silently loses the subtree (checked on 20260827), and the MFT sweep must
    give back every file the walk missed, marker included. Names from the walk, the rest by record."""
    need("mkntfs", "ntfs-3g", "fls", "icat")
    if not images.ntfs_fuse_works():
        skip_or_fail("ntfs-3g needs /dev/fuse and root to write the tree")
    image = ntfs_images.blank(disk_dir / "ntfs-subtree.img", 32)
    with ntfs_images.mounted(image) as root:
        (root / "many").mkdir()
        for i in range(200):
            (root / "many" / f"file-{i:03d}-long-name.txt").write_bytes(b"x" * i + (MARK if i == 150 else b""))
    ntfs_images.break_subnode_link(image)
    truth = sleuthkit(image)
    assert len(truth) == 200 and truth["/many/file-150-long-name.txt"] == sha(b"x" * 150 + MARK)
    root = open_fs(image.open("rb"))
    walked = {item.node.key: item.node for item in Walker(WalkLimits()).walk(root) if isinstance(item, GuestFile)}
    swept = {node.key: node for node in root.allocated() or [] if node.key not in walked}
    reached = {**walked, **swept}
    assert sorted(sha(n.open().read()) for n in reached.values()) == sorted(truth.values())
    assert all(n.name.startswith("<mft ") for n in swept.values())


def test_a_lost_subtree_is_scanned_through_the_target_and_counted(disk_dir, engine, ruleset):
    """The same lost subtree through DiskTarget, a marker in every file: every file is found,
    those the directories lost by MFT record, and the accounting counts them."""
    need("mkntfs", "ntfs-3g", "fls")
    if not images.ntfs_fuse_works():
        skip_or_fail("ntfs-3g needs /dev/fuse and root to write the tree")
    image = ntfs_images.blank(disk_dir / "ntfs-subtree-target.img", 32)
    with ntfs_images.mounted(image) as root:
        (root / "many").mkdir()
        for i in range(200):
            (root / "many" / f"file-{i:03d}-long-name.txt").write_bytes(b"x" * i + MARK)
    ntfs_images.break_subnode_link(image)
    assert len(sleuthkit(image)) == 200
    verdict = scan(engine, ruleset, path=str(image))
    counts = verdict.coverage.accounting
    assert counts["disk.sweep"] == 1
    assert counts["disk.files_allocated"] == 200
    assert counts["disk.files_orphaned"] == 200 - counts["disk.files_reached"] > 0
    paths = [f.context["path"] for f in verdict.findings]
    assert len(paths) == 200
    assert sum(p.startswith("<mft ") for p in paths) == counts["disk.files_orphaned"]
