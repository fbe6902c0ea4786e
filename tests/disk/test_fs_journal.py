"""ext4 journals with committed changes not yet in place: read as the kernel reads them after mounting.

The journal transactions are written by e2fsprogs (``debugfs`` ``jo``/``jw``/``jc``) or by the
kernel itself; the oracle is the kernel, mounting a copy read-write (it replays the journal).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from scanner.verdicts import VerdictKind
from tests.disk.conftest import need
from tests.disk.images import run
from tests.disk.oracle import avscan_read, kernel_files, mounted_rw
from tests.disk.scanning import found, scan
from tests.support.samples import eicar

BLOCK = 1024


@pytest.fixture(autouse=True)
def tools() -> None:
    need("mkfs.ext4", "debugfs", "yara")


def kernel_view(image: Path, tmp: Path) -> dict[str, str]:
    """What the kernel lists after replaying the journal (of a copy: replay writes)."""
    copy = tmp / f"kernel-{image.name}"
    shutil.copyfile(image, copy)
    with mounted_rw(copy) as mnt:
        return kernel_files(mnt)


def journal_only(tmp: Path, *, revoke_directory: bool = False) -> tuple[Path, int]:
    """An image where ``/d/evil`` was written (data in place, as ``data=ordered`` leaves it) but
    every metadata block of that write is only in a committed journal transaction. With
    ``revoke_directory`` a later transaction revokes the directory block. Returns the image and
    the file's inode."""
    payload = tmp / "payload"
    payload.write_bytes(eicar())
    image = tmp / "fs.img"
    run("mkfs.ext4", "-q", "-F", "-b", str(BLOCK), image, "8M")
    run("debugfs", "-w", "-R", "mkdir /d", image)
    before = image.read_bytes()
    out = run("debugfs", "-w", "-R", f"write {payload} /d/evil", image)
    inode = int(out.split("Allocated inode: ")[1].split()[0])
    after = bytearray(image.read_bytes())
    data = {int(b) for b in run("debugfs", "-R", "blocks /d/evil", image).split()}
    changed = [
        n
        for n in range(len(after) // BLOCK)
        if before[n * BLOCK : (n + 1) * BLOCK] != after[n * BLOCK : (n + 1) * BLOCK]
    ]
    meta = [n for n in changed if n not in data]
    (tmp / "meta.bin").write_bytes(b"".join(after[n * BLOCK : (n + 1) * BLOCK] for n in meta))
    for n in meta:  # back to what lies on disk before a checkpoint
        after[n * BLOCK : (n + 1) * BLOCK] = before[n * BLOCK : (n + 1) * BLOCK]
    image.write_bytes(bytes(after))
    directory = int(run("debugfs", "-R", "blocks /d", image).split()[0])
    commands = ["jo", f"jw -b {','.join(map(str, meta))} {tmp / 'meta.bin'}"]
    if revoke_directory:
        commands.append(f"jw -r {directory} /dev/null")
    (tmp / "journal.cmds").write_text("\n".join([*commands, "jc"]) + "\n")
    run("debugfs", "-w", "-f", tmp / "journal.cmds", image)
    assert "/d/evil" not in str(run("debugfs", "-R", "ls -p /d", image))  # not in place
    return image, inode


def test_a_file_only_the_journal_holds_is_scanned_by_its_name(tmp_path, engine, ruleset):
    image, _ = journal_only(tmp_path)
    assert set(kernel_view(image, tmp_path)) == {"/d/evil"}
    read = avscan_read(image)
    assert read.paths() == kernel_view(image, tmp_path) and not read.gaps
    verdict = scan(engine, ruleset, path=str(image))
    assert found(verdict) == {("EICAR_Test_File", "/d/evil")} and verdict.coverage.complete


def test_a_revoked_journal_block_is_not_replayed(tmp_path, engine, ruleset):
    """The directory block is revoked by a later transaction: the kernel keeps the old directory
    (no name), the inode and bitmaps are replayed: the sweep scans the file by inode."""
    image, inode = journal_only(tmp_path, revoke_directory=True)
    assert "/d/evil" not in kernel_view(image, tmp_path)
    verdict = scan(engine, ruleset, path=str(image))
    assert {(f.rule, f.unit) for f in verdict.findings} == {("EICAR_Test_File", f"disk:<inode {inode}>")}


def test_a_journal_the_kernel_wrote_reads_as_the_kernel_reads_it(tmp_path):
    """Files written through a read-write loop mount, one ``fsync`` (the kernel commits the
    transaction to its journal, checksummed v3 tags, but writes nothing in place yet), and the
    image copied while still mounted: a disk frozen under a running guest. Same files, same
    bytes as the kernel's own replay."""
    image = tmp_path / "live.img"
    run("mkfs.ext4", "-q", "-F", image, "32M")
    frozen = tmp_path / "frozen.img"
    with mounted_rw(image) as mnt:
        for n in range(200):
            (mnt / f"dir{n % 7}").mkdir(exist_ok=True)
            (mnt / f"dir{n % 7}" / f"f{n}.bin").write_bytes(b"%d " % n * (n + 1) + eicar())
        fd = os.open(mnt / "dir0" / "f0.bin", os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        shutil.copyfile(image, frozen)
    assert "needs_recovery" in run("dumpe2fs", "-h", frozen)
    truth = kernel_view(frozen, tmp_path)
    assert len(truth) == 200
    read = avscan_read(frozen)
    assert read.paths() == truth and not read.gaps


def test_a_journal_that_cannot_be_replayed_is_a_gap(tmp_path, engine, ruleset):
    """The journal superblock's magic overwritten while the filesystem needs recovery: the volume
    is read as it lies and the verdict says the journal was not replayed."""
    image, _ = journal_only(tmp_path)
    first = int(run("debugfs", "-R", "blocks <8>", image).split()[0])
    with image.open("r+b") as f:
        f.seek(first * BLOCK)
        f.write(b"\0\0\0\0")
    verdict = scan(engine, ruleset, path=str(image))
    assert verdict.kind is VerdictKind.INCOMPLETE
    [gap] = [g for g in verdict.coverage.gaps if g.unit == "disk:<filesystem>"]
    assert "journal not replayed" in gap.detail


def test_an_xfs_log_with_changes_not_in_place_is_a_gap(tmp_path, engine, ruleset):
    """XFS written through the kernel, one ``fsync``, copied while mounted: the new files are only
    in the log (the kernel sees them after its log recovery). Not replayed here: a gap saying so,
    never CLEAN. The same image unmounted cleanly has no such gap."""
    need("mkfs.xfs")
    image = tmp_path / "live.img"
    with image.open("wb") as f:
        f.truncate(320 << 20)
    run("mkfs.xfs", "-q", "-f", image)
    frozen = tmp_path / "frozen.img"
    with mounted_rw(image) as mnt:
        for n in range(50):
            (mnt / f"dir{n % 7}").mkdir(exist_ok=True)
            (mnt / f"dir{n % 7}" / f"f{n}.bin").write_bytes(b"clean %d\n" % n)
        fd = os.open(mnt / "dir0" / "f0.bin", os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        shutil.copyfile(image, frozen)
    assert len(kernel_view(frozen, tmp_path)) == 50  # the kernel recovers its log

    verdict = scan(engine, ruleset, path=str(frozen))
    assert verdict.kind is VerdictKind.INCOMPLETE
    [gap] = [g for g in verdict.coverage.gaps if g.unit == "disk:<filesystem>"]
    assert "XFS log holds changes not yet in place" in gap.detail
    clean = scan(engine, ruleset, path=str(image))
    assert clean.kind is VerdictKind.CLEAN and clean.coverage.complete, clean.coverage.gaps
