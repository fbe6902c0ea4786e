"""Every container x volume x filesystem gives exactly the findings ``yara`` gives on the source tree.

Images are built here by the real tools (see ``images.py``); ground truth is the ``yara`` CLI over
the staged copy of the tree that went into each filesystem, with the same rules.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scanner.verdicts import VerdictKind
from tests.disk import images
from tests.disk.conftest import need, skip_or_fail
from tests.disk.scanning import found, scan

FILESYSTEMS = {
    # name: (tools, staging options, builder)
    "ext4": (("mkfs.ext4",), {}, images.ext4),
    "xfs": (("mkfs.xfs",), {"spaces": False}, images.xfs),  # protofile names cannot hold spaces
    "ntfs": (("mkfs.ntfs", "ntfs-3g"), {"symlinks": False}, images.ntfs),
    "fat32": (("mkfs.vfat", "mcopy"), {"symlinks": False}, images.fat32),
}


@pytest.fixture(scope="session")
def built(disk_dir: Path, samples: Path, rules_file: Path):
    """name -> (raw filesystem image, staged tree, yara ground truth); built once per session."""
    cache: dict[str, tuple[Path, Path, set[tuple[str, str]]]] = {}

    def get(name: str) -> tuple[Path, Path, set[tuple[str, str]]]:
        tools, options, builder = FILESYSTEMS[name]
        need("yara", *tools)
        if name == "ntfs" and not images.ntfs_fuse_works():
            skip_or_fail("ntfs-3g needs /dev/fuse and root to copy a tree with directories in")
        if name not in cache:
            staged = images.stage(samples, disk_dir / f"staged-{name}", **options)
            image = builder(staged, disk_dir / f"{name}.img")
            cache[name] = (image, staged, images.yara_truth(rules_file, staged))
        return cache[name]

    return get


@pytest.mark.parametrize("fs", sorted(FILESYSTEMS))
def test_filesystem_on_a_whole_raw_disk_matches_yara(fs, built, engine, ruleset):
    image, _, truth = built(fs)
    verdict = scan(engine, ruleset, path=str(image))
    assert truth and found(verdict) == truth
    assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete, verdict.coverage.gaps
    assert ("EICAR_Test_File", "/données/résumé.com") in truth  # unicode path round-trips


def test_findings_carry_guest_path_volume_times_and_sha256(built, engine, ruleset, samples):
    image, _, _ = built("ext4")
    verdict = scan(engine, ruleset, path=str(image))
    [f] = [f for f in verdict.findings if f.context["path"] == "/docs/nested/deeper/evil file.txt"]
    import hashlib

    expected = hashlib.sha256((samples / "docs/nested/deeper/evil file.txt").read_bytes()).hexdigest()
    assert f.unit == "disk:/docs/nested/deeper/evil file.txt"
    assert f.context["volume"] == "disk" and f.context["sha256"] == expected and f.context["size"] == "75"
    assert f.context["mtime"][:4].isdigit()
    assert verdict.coverage.units_scanned == sum(1 for p in samples.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.parametrize("table", ["gpt", "mbr"])
def test_partition_tables(table, built, disk_dir, engine, ruleset):
    need("sgdisk" if table == "gpt" else "sfdisk")
    fs, _, truth = built("ext4")
    disk = getattr(images, table)(fs, disk_dir / f"{table}.raw")
    verdict = scan(engine, ruleset, path=str(disk))
    assert found(verdict) == truth and verdict.coverage.complete
    assert {f.context["volume"] for f in verdict.findings} == {"p1"}


def test_lvm2_logical_volume(built, disk_dir, engine, ruleset):
    reason = images.lvm_works()
    if reason:
        skip_or_fail(reason)
    fs, _, truth = built("xfs")
    disk = images.lvm(fs, disk_dir / "lvm.raw")
    verdict = scan(engine, ruleset, path=str(disk))
    assert found(verdict) == truth and verdict.coverage.complete
    assert {f.context["volume"] for f in verdict.findings} == {"lvm/avscanvg/data"}


@pytest.fixture(scope="session")
def partitioned(built, disk_dir: Path, samples: Path, rules_file: Path):
    """A GPT disk with ext4 built from the tree *without* ``late/`` (the base), and the same disk
    with it (what the guest sees after writing into a snapshot): raw images of both."""
    need("sgdisk", "qemu-img", "qemu-io")
    early_src = images.stage(samples, disk_dir / "staged-early")
    shutil.rmtree(early_src / "late")
    early = images.gpt(images.ext4(early_src, disk_dir / "early.img"), disk_dir / "early.raw")
    full_fs, _, truth = built("ext4")
    late = images.gpt(full_fs, disk_dir / "late.raw")
    return early, late, truth


@pytest.mark.parametrize(
    "fmt, options",
    [
        ("qcow2", ()),
        ("vmdk", ("-o", "subformat=monolithicSparse")),
        ("vmdk", ("-o", "subformat=streamOptimized")),
        ("vmdk", ("-o", "subformat=monolithicFlat")),
        ("vhdx", ()),
    ],
    ids=["qcow2", "vmdk-sparse", "vmdk-stream", "vmdk-flat", "vhdx"],
)
def test_containers(fmt, options, partitioned, disk_dir, engine, ruleset):
    _, late, truth = partitioned
    name = "-".join([fmt, *(o.split("=")[-1] for o in options[1:])])
    image = images.convert(late, disk_dir / f"{name}.{fmt}", fmt, *options)
    verdict = scan(engine, ruleset, path=str(image))
    assert found(verdict) == truth and verdict.coverage.complete, verdict.coverage.gaps
    assert verdict.details["disk.format"] == fmt


@pytest.mark.parametrize("fmt", ["qcow2", "vmdk"])
def test_snapshot_chain_reads_as_the_guest_sees_it(fmt, partitioned, disk_dir, engine, ruleset):
    """base <- delta (<- delta): the file written after the snapshot is only in the delta."""
    early, late, truth = partitioned
    base = images.convert(early, disk_dir / f"chain-base.{fmt}", fmt)
    middle = images.overlay(base, fmt, disk_dir / f"chain-base-000001.{fmt}", early, early)  # empty delta
    top = images.overlay(middle, fmt, disk_dir / f"chain-base-000002.{fmt}", late, early)
    only_base = scan(engine, ruleset, path=str(base))
    assert ("EICAR_Test_File", "/late/eicar-late.com") not in found(only_base)
    verdict = scan(engine, ruleset, path=str(top))
    assert found(verdict) == truth and verdict.coverage.complete, verdict.coverage.gaps
    assert len(verdict.details["disk.chain"].split(" <- ")) == 3


def test_qcow2_over_a_raw_backing_file(partitioned, disk_dir, engine, ruleset):
    early, late, truth = partitioned
    raw_base = disk_dir / "rawbase.img"
    shutil.copyfile(early, raw_base)
    top = images.overlay(raw_base, "qcow2", disk_dir / "over-raw.qcow2", late, early, base_fmt="raw")
    verdict = scan(engine, ruleset, path=str(top))
    assert found(verdict) == truth and verdict.coverage.complete
