"""Coverage by allocation: what the filesystem says is in use is scanned, whatever its directories say.

Images are made by ``mkfs.ext4``/``debugfs``/``sgdisk``; the kernel (a read-only loop mount) is
the reader the names and bytes are checked against.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from scanner.targets import FilePolicy
from scanner.verdicts import VerdictKind
from tests.disk import images
from tests.disk.conftest import need
from tests.disk.images import run
from tests.disk.oracle import avscan_read, kernel_files, mounted, mounted_rw, recovered
from tests.disk.scanning import found, scan
from tests.support.samples import eicar, marker

pytestmark = pytest.mark.usefixtures("tools")


@pytest.fixture
def tools() -> None:
    need("mkfs.ext4", "debugfs", "sgdisk", "yara")


def debugfs(image: Path, *commands: str) -> str:
    """Run ``debugfs -w`` commands on ``image`` (one process, in order)."""
    script = image.with_suffix(".debugfs")
    script.write_text("\n".join(commands) + "\n")
    return run("debugfs", "-w", "-f", script, image)


def inode_of(image: Path, path: str) -> int:
    out = run("debugfs", "-R", f"stat {path}", image)
    return int(re.search(r"Inode: (\d+)", out).group(1))  # type: ignore[union-attr]


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_a_file_no_directory_lists_is_scanned_as_its_inode(tmp_path, engine, ruleset):
    """``debugfs unlink`` removes the name only: the inode stays allocated with its data (what a
    damaged directory or a rootkit hiding a file leaves). The sweep scans it as ``<inode N>``."""
    src = tree(tmp_path / "src", {"hidden/evil.com": eicar(), "readme.txt": b"clean\n", "a/b.txt": b"x"})
    image = images.ext4(src, tmp_path / "fs.img", 8)
    with mounted(image) as mnt:
        allocated = len(kernel_files(mnt))
    inode = inode_of(image, "/hidden/evil.com")
    debugfs(image, "unlink /hidden/evil.com")

    verdict = scan(engine, ruleset, path=str(image))
    assert verdict.kind is VerdictKind.MALICIOUS
    assert {(f.rule, f.unit) for f in verdict.findings} == {("EICAR_Test_File", f"disk:<inode {inode}>")}
    assert verdict.coverage.accounting == {
        "disk.sweep": 1,
        "disk.files_allocated": allocated,
        "disk.files_reached": allocated - 1,
        "disk.files_orphaned": 1,
    }


def test_two_ext4_volumes_with_the_same_inode_numbers_are_both_walked(tmp_path, engine, ruleset):
    """/boot + / on one disk: the same directory inode numbers in both must not read as a loop."""
    one = tree(tmp_path / "one", {"etc/x/a.txt": b"boot", "etc/x/evil.com": eicar()})
    two = tree(tmp_path / "two", {"etc/x/a.txt": b"root", "etc/x/evil.com": b"pre " + eicar()})
    fs1, fs2 = images.ext4(one, tmp_path / "1.img", 8), images.ext4(two, tmp_path / "2.img", 8)
    assert inode_of(fs1, "/etc/x") == inode_of(fs2, "/etc/x")
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 20 * images.MiB)
    run("sgdisk", "-n", "1:2048:+8M", "-n", "2:0:+8M", disk)
    starts = [int(m) for m in re.findall(r"^\s+\d+\s+(\d+)", run("sgdisk", "-p", disk), re.M)]
    for fs, start in zip((fs1, fs2), starts, strict=True):
        run("dd", f"if={fs}", f"of={disk}", "bs=512", f"seek={start}", "conv=notrunc", "status=none")

    verdict = scan(engine, ruleset, path=str(disk))
    assert {f.unit for f in verdict.findings} == {"p1:/etc/x/evil.com", "p2:/etc/x/evil.com"}
    assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete, verdict.coverage.gaps
    assert verdict.coverage.accounting["p2.files_orphaned"] == 0


def test_an_entry_in_the_last_bytes_of_a_directory_block_is_named(tmp_path, engine, ruleset):
    """Entries written in order (``debugfs write``) so the last one is a 12-byte record ending
    the block exactly: the kernel lists it, and so must we, by its name."""
    image = tmp_path / "fs.img"
    run("mkfs.ext4", "-q", "-F", "-b", "1024", "-O", "^dir_index,^metadata_csum", image, "4M")
    payload = tmp_path / "payload"
    payload.write_bytes(eicar())
    filler = tmp_path / "filler"
    filler.write_bytes(b"filler\n")
    # '.' 12 + '..' 12, then 3 x (8 + 240) + (8 + 236) = 988: the block's last 12 bytes remain
    names = ["a" * 240, "b" * 240, "c" * 240, "d" * 236]
    debugfs(image, "mkdir /d", *(f"write {filler} /d/{n}" for n in names), f"write {payload} /d/evil")
    with mounted(image) as mnt:
        assert "/d/evil" in kernel_files(mnt)

    verdict = scan(engine, ruleset, path=str(image))
    assert found(verdict) == {("EICAR_Test_File", "/d/evil")}
    assert verdict.coverage.complete and verdict.coverage.accounting["disk.files_orphaned"] == 0


def test_the_last_inode_and_its_subtree_are_walked(tmp_path, engine, ruleset):
    """A directory whose inode number is ``s_inodes_count`` holds the only name of a file."""
    image = tmp_path / "fs.img"
    run("mkfs.ext4", "-q", "-F", "-b", "1024", "-I", "128", "-N", "16", image, "4M")
    payload = tmp_path / "payload"
    payload.write_bytes(eicar())
    count = int(re.search(r"Inode count:\s+(\d+)", run("dumpe2fs", "-h", image)).group(1))  # type: ignore[union-attr]
    fill = [f"write {payload} /f{n}" for n in range(12, count - 1)]
    debugfs(
        image,
        *fill,
        f"write {payload} /evil",
        "mkdir /top",
        "link /evil /top/evil",
        "unlink /evil",
        *(f"rm /f{n}" for n in range(12, count - 1)),
    )
    assert inode_of(image, "/top") == count
    with mounted(image) as mnt:
        assert set(kernel_files(mnt)) == {"/top/evil"}

    read = avscan_read(image)
    assert set(read.paths()) == {"/top/evil"} and not read.gaps
    verdict = scan(engine, ruleset, path=str(image))
    assert found(verdict) == {("EICAR_Test_File", "/top/evil")}


def test_a_corrupt_directory_block_is_a_gap_and_the_sweep_still_scans_its_files(tmp_path, engine, ruleset):
    """A record length overwritten in ``/docs``'s block: the listing stops there (a gap naming the
    directory), and the files it lost are scanned by inode."""
    src = tree(tmp_path / "src", {f"docs/file{n:02}.txt": b"clean %d\n" % n for n in range(20)})
    (src / "docs" / "zz-marker.bin").write_bytes(b"head " + marker("DISK") + b" tail")
    image = images.ext4(src, tmp_path / "fs.img", 8)
    block = int(run("debugfs", "-R", "blocks /docs", image).split()[0])
    with image.open("r+b") as f:  # the third entry's rec_len (after '.' 12 and '..' 12) -> 3
        f.seek(block * _block_size(image) + 24 + 4)
        f.write((3).to_bytes(2, "little"))

    verdict = scan(engine, ruleset, path=str(image))
    assert verdict.kind is VerdictKind.MALICIOUS
    assert [f.rule for f in verdict.findings] == ["Marker_DISK"]
    assert verdict.findings[0].unit.startswith("disk:<inode ")
    [gap] = [g for g in verdict.coverage.gaps if g.unit == "disk:/docs"]
    assert "record length 3" in gap.detail
    assert verdict.coverage.accounting["disk.files_orphaned"] == 21


def _block_size(image: Path) -> int:
    return int(re.search(r"Block size:\s+(\d+)", run("dumpe2fs", "-h", image)).group(1))  # type: ignore[union-attr]


def test_xfs_file_its_directory_no_longer_lists_is_scanned_as_its_inode(tmp_path, engine, ruleset):
    """``xfs_db`` lowers a short-form directory's entry count: the kernel no longer lists the file
    (it rejects the whole directory); the inode btree still says the inode is in use, and its data
    is scanned."""
    need("mkfs.xfs", "xfs_db")
    src = tree(tmp_path / "src", {"d/a.txt": b"clean\n", "d/b.com": eicar()})
    image = tmp_path / "fs.img"
    with image.open("wb") as f:
        f.truncate(320 * images.MiB)
    run("mkfs.xfs", "-q", "-f", image)
    with mounted_rw(image) as mnt:
        run("cp", "-a", f"{src}/.", mnt)
        inode = (mnt / "d" / "b.com").stat().st_ino
    version = "sfdir3" if "sfdir3" in run("xfs_db", "-r", "-c", "path /d", "-c", "print", image) else "sfdir2"
    run("xfs_db", "-x", "-c", "path /d", "-c", f"write u3.{version}.hdr.count 1", image)
    with mounted(image, "norecovery") as mnt:
        assert "/d/b.com" not in kernel_files(mnt)

    verdict = scan(engine, ruleset, path=str(image))
    assert {(f.rule, f.unit) for f in verdict.findings} == {("EICAR_Test_File", f"disk:<inode {inode}>")}
    assert verdict.coverage.accounting["disk.files_orphaned"] == 1
    assert verdict.coverage.accounting["disk.files_allocated"] == 2


def test_fat_chain_no_directory_lists_is_scanned_as_its_cluster(tmp_path, engine, ruleset):
    """A directory entry marked deleted (0xE5) in place, its clusters still allocated in the FAT
    (what a damaged directory leaves): The Sleuth Kit no longer recovers it as allocated; the
    sweep scans the chain."""
    need("mkfs.vfat", "mcopy", "tsk_recover")
    src = tree(tmp_path / "src", {"HIDDEN.COM": b"A" * 5000 + eicar(), "README.TXT": b"clean\n"})
    image = tmp_path / "fat.img"
    run("mkfs.vfat", "-F", "32", "-C", image, str(40 * 1024))
    run("mcopy", "-i", image, src / "HIDDEN.COM", src / "README.TXT", "::/")
    data = bytearray(image.read_bytes())
    at = data.index(b"HIDDEN  COM")
    cluster = int.from_bytes(data[at + 20 : at + 22], "little") << 16 | int.from_bytes(
        data[at + 26 : at + 28], "little"
    )
    data[at] = 0xE5
    image.write_bytes(bytes(data))
    with recovered(image) as out:
        assert set(kernel_files(out)) == {"/README.TXT"}

    verdict = scan(engine, ruleset, path=str(image))
    assert {(f.rule, f.unit) for f in verdict.findings} == {("EICAR_Test_File", f"disk:<cluster {cluster}>")}
    assert verdict.coverage.accounting["disk.files_orphaned"] == 1
    assert verdict.coverage.accounting["disk.files_reached"] == 1


def test_fat_directory_chain_that_loops_is_a_gap_and_its_files_are_swept(tmp_path, engine, ruleset):
    """The FAT entry of a directory's cluster points to itself: the listing is a gap naming the
    loop (never a hang), and the file it held is scanned by its chain."""
    need("mkfs.vfat", "mcopy", "mmd")
    src = tree(tmp_path / "src", {"EVIL.COM": eicar()})
    image = tmp_path / "fat.img"
    run("mkfs.vfat", "-F", "32", "-C", image, str(40 * 1024))
    run("mmd", "-i", image, "::/D")
    run("mcopy", "-i", image, src / "EVIL.COM", "::/D/")
    data = bytearray(image.read_bytes())
    cluster, evil = _first_cluster(data, b"D          \x10"), _first_cluster(data, b"EVIL    COM")
    fat = int.from_bytes(data[14:16], "little") * int.from_bytes(data[11:13], "little")  # reserved sectors
    data[fat + 4 * cluster : fat + 4 * cluster + 4] = cluster.to_bytes(4, "little")
    image.write_bytes(bytes(data))

    verdict = scan(engine, ruleset, path=str(image))
    assert verdict.kind is VerdictKind.MALICIOUS
    assert [f.unit for f in verdict.findings] == [f"disk:<cluster {evil}>"]
    [gap] = [g for g in verdict.coverage.gaps if g.unit == "disk:/D"]
    assert f"loops at cluster {cluster}" in gap.detail


def _first_cluster(image: bytes | bytearray, short_name: bytes) -> int:
    """The first cluster of the FAT directory entry that starts with ``short_name``."""
    at = image.index(short_name)
    return int.from_bytes(image[at + 20 : at + 22], "little") << 16 | int.from_bytes(image[at + 26 : at + 28], "little")


def test_xfs_corrupt_directory_block_is_a_gap_and_the_sweep_still_scans_its_files(tmp_path, engine, ruleset):
    """The magic of ``/docs``'s directory block (found by ``xfs_db``) overwritten: the listing is a gap
    naming the directory, never a silently empty one, and the files are scanned by inode."""
    need("mkfs.xfs", "xfs_db")
    files = {f"docs/file-with-a-longer-name-{n:02}.txt": b"clean %d\n" % n for n in range(40)}
    src = tree(tmp_path / "src", {**files, "docs/zz-marker.bin": b"head " + marker("DISK") + b" tail"})
    image = tmp_path / "fs.img"
    with image.open("wb") as f:
        f.truncate(320 * images.MiB)
    run("mkfs.xfs", "-q", "-f", image)
    with mounted_rw(image) as mnt:
        run("cp", "-a", f"{src}/.", mnt)
    out = run("xfs_db", "-r", "-c", "path /docs", "-c", "bmap", image)
    block = int(re.search(r"startblock (\d+)", out).group(1))  # type: ignore[union-attr]
    at = int(re.search(r"\((\d+)\)", run("xfs_db", "-r", "-c", f"convert fsblock {block} byte", image)).group(1))  # type: ignore[union-attr]
    with image.open("r+b") as f:
        f.seek(at)
        assert f.read(4) == b"XDB3"
        f.seek(at)
        f.write(b"XXXX")

    verdict = scan(engine, ruleset, path=str(image))
    assert verdict.kind is VerdictKind.MALICIOUS
    assert [f.rule for f in verdict.findings] == ["Marker_DISK"]
    assert verdict.findings[0].unit.startswith("disk:<inode ")
    [gap] = [g for g in verdict.coverage.gaps if g.unit == "disk:/docs"]
    assert "directory block 0 is damaged" in gap.detail
    assert verdict.coverage.accounting["disk.files_orphaned"] == len(files) + 1


def test_the_sweep_obeys_the_entry_limit(tmp_path, engine, ruleset):
    """With ``max_files`` reached by the walk, files found only by the sweep are not offered
    unbounded: the sweep stops with a gap saying so."""
    src = tree(tmp_path / "src", {f"f{n}.txt": b"clean" for n in range(6)})
    image = images.ext4(src, tmp_path / "fs.img", 8)
    debugfs(image, *(f"unlink /f{n}.txt" for n in range(6)))  # six inodes only the sweep finds
    verdict = scan(engine, ruleset, FilePolicy(max_files=3), path=str(image))
    assert verdict.kind is VerdictKind.INCOMPLETE
    [gap] = [g for g in verdict.coverage.gaps if g.unit == "disk:<allocation>"]
    assert "more than 3 entries" in gap.detail
    assert verdict.coverage.accounting["disk.sweep"] == 0
    assert verdict.coverage.units_scanned <= 3


def test_an_fscrypt_encrypted_file_is_a_gap_named_once(tmp_path, engine, ruleset):
    """An inode flagged encrypted (``debugfs set_inode_field``; what fscrypt leaves): its data is
    ciphertext without the key, so it is a gap naming the file, never a CLEAN unit, and the sweep
    does not report it a second time."""
    src = tree(tmp_path / "src", {"secret/data.bin": b"ciphertext stands in here", "clean.txt": b"ok"})
    image = images.ext4(src, tmp_path / "fs.img", 8)
    flags = int(re.search(r"Flags: (0x[0-9a-f]+)", run("debugfs", "-R", "stat /secret/data.bin", image)).group(1), 16)  # type: ignore[union-attr]
    debugfs(image, f"set_inode_field /secret/data.bin flags {flags | 0x800:#x}")
    verdict = scan(engine, ruleset, path=str(image))
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert [(g.unit, "encrypted" in g.detail) for g in verdict.coverage.gaps] == [("disk:/secret/data.bin", True)]
    assert verdict.coverage.accounting["disk.files_orphaned"] == 0
