"""Volumes as Linux sees them (issue 11): MBR logical partitions numbered like ``partx``, LVM2
groups over several physical volumes of one disk, small volumes, swap areas scanned as pages."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from scanner.verdicts import GapKind, VerdictKind
from tests.disk import images
from tests.disk.conftest import need, skip_or_fail
from tests.disk.scanning import scan
from tests.support.samples import eicar, marker

MiB = images.MiB


def put(data: bytes | Path, disk: Path, offset: int) -> None:
    with disk.open("r+b") as f:
        f.seek(offset)
        f.write(data.read_bytes() if isinstance(data, Path) else data)


def one_file_fs(tmp_path: Path, name: str, content: bytes, size_mib: int = 4) -> Path:
    src = tmp_path / f"src-{name}"
    src.mkdir()
    (src / name).write_bytes(content)
    return images.ext4(src, tmp_path / f"{name}.ext4", size_mib)


def partx(disk: Path) -> dict[int, int]:
    """Linux's own numbering: partition number -> start sector, from ``partx --show``."""
    out = images.run("partx", "--show", "--noheadings", "-o", "NR,START", disk)
    return {int(nr): int(start) for nr, start in (line.split() for line in out.splitlines())}


def units(verdict) -> set[str]:
    return {f.unit for f in verdict.findings}


def test_mbr_logical_partitions_are_numbered_as_linux_numbers_them(tmp_path, engine, ruleset):
    """Logicals whose EBR chain order differs from their order on disk: names follow the chain."""
    need("sfdisk", "partx", "mkfs.ext4")
    disk = tmp_path / "mbr.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 64 * MiB)
    starts = {"first.com": 2048, "far.com": 90000, "near.com": 12288, "mid.com": 40000}
    table = "label: dos\n" + "start=2048, size=8192, type=83\nstart=10240, size=110000, type=5\n"
    table += "".join(f"start={starts[n]}, size=8192, type=83\n" for n in ("far.com", "near.com", "mid.com"))
    images.run("sfdisk", "-q", disk, input=table)
    for name, start in starts.items():
        put(one_file_fs(tmp_path, name, eicar()), disk, start * 512)
    by_start = {start: nr for nr, start in partx(disk).items()}
    expected = {f"p{by_start[start]}:/{name}" for name, start in starts.items()}
    assert expected == {"p1:/first.com", "p5:/far.com", "p6:/near.com", "p7:/mid.com"}  # partx says so
    verdict = scan(engine, ruleset, path=str(disk))
    assert units(verdict) == expected  # (four ext4 of one disk: the walker's loop keys are fs-ext's)
    assert verdict.details["disk.volumes"] == "p1, p5, p6, p7"


def test_a_volume_smaller_than_64_kib_is_a_gap_not_dropped(tmp_path, engine, ruleset):
    need("sfdisk")
    disk = tmp_path / "small.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 4 * MiB)
    images.run("sfdisk", "-q", disk, input="label: dos\nstart=2048, size=64, type=83\n")
    put(os.urandom(32 * 1024), disk, 2048 * 512)
    verdict = scan(engine, ruleset, path=str(disk))
    assert verdict.kind is VerdictKind.INCOMPLETE
    [gap] = [g for g in verdict.coverage.gaps if g.unit == "p1"]
    assert gap.length == 32 * 1024 and "no supported filesystem" in gap.detail


def swap_disk(tmp_path: Path, page: bytes, fake: bool = False) -> Path:
    """MBR disk: p1 a swap area made by ``mkswap`` (or, ``fake``, random bytes with only the
    signature), ``page`` written into its 10th page as a swapped-out page; p2 a clean ext4."""
    need("sfdisk", "mkswap", "blkid", "mkfs.ext4")
    area = tmp_path / "swap.area"
    if fake:
        area.write_bytes(os.urandom(8 * MiB))
        put(b"SWAPSPACE2", area, 4096 - 10)
    else:
        area.write_bytes(b"")
        os.truncate(area, 8 * MiB)
        images.run("mkswap", "-q", area)
        assert images.run("blkid", "-p", "-o", "value", "-s", "TYPE", area).strip() == "swap"  # the oracle
    put(page, area, 10 * 4096 + 123)
    disk = tmp_path / "swap.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 24 * MiB)
    images.run("sfdisk", "-q", disk, input="label: dos\nstart=2048, size=16384, type=82\nstart=20480, type=83\n")
    put(area, disk, 2048 * 512)
    put(one_file_fs(tmp_path, "clean.txt", b"nothing here\n"), disk, 20480 * 512)
    return disk


def test_swap_area_pages_are_scanned(tmp_path, engine, ruleset):
    verdict = scan(engine, ruleset, path=str(swap_disk(tmp_path, marker("DISK"))))
    assert units(verdict) == {"p1:<swap>"} and verdict.coverage.complete
    assert verdict.kind is VerdictKind.MALICIOUS


def test_swap_signature_without_a_swap_header_is_a_gap(tmp_path, engine, ruleset):
    verdict = scan(engine, ruleset, path=str(swap_disk(tmp_path, marker("DISK"), fake=True)))
    assert verdict.kind is VerdictKind.INCOMPLETE and not verdict.findings
    [gap] = [g for g in verdict.coverage.gaps if g.unit == "p1"]
    assert gap.kind is GapKind.SKIPPED_POLICY and "swap signature" in gap.detail


# -- LVM2 over several physical volumes of one disk -------------------------------------------


def two_pv_disk(tmp_path: Path, fs: Path) -> Path:
    """MBR disk, p1 and p2 LVM2 PVs of one VG (made by pvcreate/vgcreate on loop devices), one LV
    whose first half is on p1 and second half on p2 (vgcfgrestore: no device-mapper needed);
    ``fs`` written through that mapping."""
    reason = images.lvm_works()
    if reason:
        skip_or_fail(reason)
    half = fs.stat().st_size // 2 // MiB
    part = (half + 8) * MiB
    disk = tmp_path / "twopv.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 2 * part + 2 * MiB)
    starts = (2048, 2048 + part // 512)
    table = "label: dos\n" + "".join(f"start={s}, size={part // 512}, type=8e\n" for s in starts)
    images.run("sfdisk", "-q", disk, input=table)
    env = {"LVM_SUPPRESS_FD_WARNINGS": "1"}
    loops = [images.run("losetup", "-f", "--show", "-o", str(s * 512), "--sizelimit", str(part), disk).strip()
             for s in starts]  # fmt: skip
    try:
        devices = ["--devices", ",".join(loops)]
        for loop in loops:
            images.run("pvcreate", "-q", *devices, loop, env=env)
        images.run("vgcreate", "-q", "-s", "1M", *devices, "twovg", *loops, env=env)
        backup = tmp_path / "twovg.cfg"
        images.run("vgcfgbackup", "-q", *devices, "-f", backup, "twovg", env=env)
        text = backup.read_text()
        pvs = re.findall(r"\n\s*(pv\d+) \{", text)
        segments = "".join(
            f'segment{i + 1} {{\nstart_extent = {i * half}\nextent_count = {half}\ntype = "striped"\n'
            f'stripe_count = 1\nstripes = ["{pv}", 0]\n}}\n'
            for i, pv in enumerate(pvs[:2])
        )
        lv = (f'\nlogical_volumes {{\nspan {{\nid = "abcdef-ghij-klmn-opqr-stuv-wxyz-012345"\n'
              f'status = ["READ", "WRITE", "VISIBLE"]\nflags = []\nsegment_count = 2\n{segments}}}\n}}\n')  # fmt: skip
        pos = text.rindex("}")
        backup.write_text(text[:pos] + lv + text[pos:])
        images.run("vgcfgrestore", "-q", *devices, "-f", backup, "twovg", env=env)
        pe = [int(images.run("pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", *devices, loop,
                             env=env).strip()) for loop in loops]  # fmt: skip
    finally:
        for loop in loops:
            images.run("losetup", "-d", loop)
    data = fs.read_bytes()
    put(data[: half * MiB], disk, starts[0] * 512 + pe[0])
    put(data[half * MiB : 2 * half * MiB], disk, starts[1] * 512 + pe[1])
    return disk


@pytest.fixture
def spanning_fs(tmp_path: Path) -> Path:
    """ext4 of 16 MiB whose marker file lies in the second half (past the first PV)."""
    need("mkfs.ext4", "debugfs")
    src = tmp_path / "span-src"
    src.mkdir()
    (src / "filler.bin").write_bytes(os.urandom(9 * MiB))
    (src / "late.com").write_bytes(eicar())
    fs = images.ext4(src, tmp_path / "span.ext4", 16)
    block = int(re.search(r"\((?:\d+-\d+|\d+)\):(\d+)", images.run("debugfs", "-R", "stat /late.com", fs))[1])
    assert block * 1024 >= 8 * MiB or block * 4096 >= 8 * MiB  # the marker is in the second PV's half
    return fs


def test_lvm2_group_over_two_physical_volumes_of_one_disk(spanning_fs, tmp_path, engine, ruleset):
    verdict = scan(engine, ruleset, path=str(two_pv_disk(tmp_path, spanning_fs)))
    assert units(verdict) == {"lvm/twovg/span:/late.com"} and verdict.coverage.complete, [
        g.detail for g in verdict.coverage.gaps
    ]


def test_lvm2_group_missing_a_physical_volume_names_it(spanning_fs, tmp_path, engine, ruleset):
    disk = two_pv_disk(tmp_path, spanning_fs)
    second = partx(disk)[2] * 512
    put(bytes(4 * 512), disk, second)  # the second PV's label is gone: that PV is not on this disk
    verdict = scan(engine, ruleset, path=str(disk))
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert any("physical volume pv1" in g.detail and "not on this disk" in g.detail for g in verdict.coverage.gaps), [
        g.detail for g in verdict.coverage.gaps
    ]


def test_a_filesystem_smaller_than_64_kib_on_a_whole_disk_is_read(tmp_path, engine, ruleset):
    need("mkfs.vfat", "mcopy", "mtype")
    image = tmp_path / "tiny.img"
    images.run("mkfs.vfat", "-C", image, "60")
    (tmp_path / "e.com").write_bytes(eicar())
    images.run("mcopy", "-i", image, tmp_path / "e.com", "::/e.com")
    assert images.run("mtype", "-i", image, "::/e.com").encode() == eicar()  # mtools reads it back
    verdict = scan(engine, ruleset, path=str(image))
    assert units(verdict) == {"disk:/e.com"} and verdict.coverage.complete, [g.detail for g in verdict.coverage.gaps]


def test_a_luks_volume_is_a_gap_naming_the_encryption(tmp_path, engine, ruleset):
    need("sfdisk", "cryptsetup")
    volume = tmp_path / "luks.part"
    volume.write_bytes(b"")
    os.truncate(volume, 20 * MiB)
    images.run("cryptsetup", "luksFormat", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
               volume, "-", input="pw")  # fmt: skip
    disk = tmp_path / "luks.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 24 * MiB)
    images.run("sfdisk", "-q", disk, input="label: dos\nstart=2048, type=83\n")
    put(volume, disk, 2048 * 512)
    verdict = scan(engine, ruleset, path=str(disk))
    assert verdict.kind is VerdictKind.INCOMPLETE
    [gap] = [g for g in verdict.coverage.gaps if g.unit == "p1"]
    assert "encrypted volume (LUKS): not scanned" in gap.detail


THIN_POOL = """
logical_volumes {
thin1 { id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa1" status = ["READ", "WRITE", "VISIBLE"] flags = []
  segment_count = 1
  segment1 { start_extent = 0 extent_count = 8 type = "thin" thin_pool = "pool" transaction_id = 0 device_id = 1 } }
pool { id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa2" status = ["READ", "WRITE", "VISIBLE"] flags = []
  segment_count = 1
  segment1 { start_extent = 0 extent_count = 16 type = "thin-pool" metadata = "pool_tmeta" pool = "pool_tdata"
    transaction_id = 1 chunk_size = 128 discards = "passdown" zero_new_blocks = 1 } }
pool_tmeta { id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa3" status = ["READ", "WRITE"] flags = [] segment_count = 1
  segment1 { start_extent = 0 extent_count = 4 type = "striped" stripe_count = 1 stripes = ["pv0", 0] } }
pool_tdata { id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa4" status = ["READ", "WRITE"] flags = [] segment_count = 1
  segment1 { start_extent = 0 extent_count = 16 type = "striped" stripe_count = 1 stripes = ["pv0", 4] } }
}
"""
THIN_MAPPING = """<superblock uuid="" time="0" transaction="1" flags="0" version="2" data_block_size="128"
  nr_data_blocks="256">
  <device dev_id="1" mapped_blocks="128" transaction="0" creation_time="0" snap_time="0">
    <range_mapping origin_begin="0" data_begin="128" length="64" time="0"/>
    <range_mapping origin_begin="64" data_begin="0" length="64" time="0"/>
  </device>
</superblock>
"""


def test_lvm2_thin_volume_is_read_through_its_pool(tmp_path, engine, ruleset):
    """A thin LV over a pool whose metadata ``thin_restore`` wrote (the two halves of the volume
    swapped in the data LV); ``thin_dump`` reads the mapping back from the disk as the oracle."""
    reason = images.lvm_works()
    if reason:
        skip_or_fail(reason)
    need("thin_restore", "thin_dump", "mkfs.ext4")
    fs = one_file_fs(tmp_path, "thin.com", eicar(), 8)
    disk = tmp_path / "thin.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 32 * MiB)
    env = {"LVM_SUPPRESS_FD_WARNINGS": "1"}
    loop = images.run("losetup", "-f", "--show", disk).strip()
    try:
        images.run("pvcreate", "-q", "--devices", loop, loop, env=env)
        images.run("vgcreate", "-q", "-s", "1M", "--devices", loop, "tvg", loop, env=env)
        backup = tmp_path / "tvg.cfg"
        images.run("vgcfgbackup", "-q", "--devices", loop, "-f", backup, "tvg", env=env)
        text = backup.read_text()
        backup.write_text(text[: text.rindex("}")] + THIN_POOL + "}\n")
        images.run("vgcfgrestore", "--force", "-q", "--devices", loop, "-f", backup, "tvg", env=env)
        pe = int(images.run("pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", "--devices", loop,
                            loop, env=env).strip())  # fmt: skip
    finally:
        images.run("losetup", "-d", loop)
    (tmp_path / "map.xml").write_text(THIN_MAPPING)
    meta = tmp_path / "tmeta.bin"
    meta.write_bytes(bytes(4 * MiB))
    images.run("thin_restore", "-q", "-i", tmp_path / "map.xml", "-o", meta)
    data = fs.read_bytes()
    put(meta, disk, pe)
    put(data[: 4 * MiB], disk, pe + 4 * MiB + 8 * MiB)  # thin blocks 0-63 -> pool blocks 128-191
    put(data[4 * MiB :], disk, pe + 4 * MiB)  # thin blocks 64-127 -> pool blocks 0-63
    back = tmp_path / "back.bin"
    back.write_bytes(disk.read_bytes()[pe : pe + 4 * MiB])
    assert 'origin_begin="0" data_begin="128" length="64"' in images.run("thin_dump", back)  # the oracle
    verdict = scan(engine, ruleset, path=str(disk))
    assert units(verdict) == {"lvm/tvg/thin1:/thin.com"} and verdict.coverage.complete, [
        g.detail for g in verdict.coverage.gaps
    ]


def test_a_gpt_claiming_four_billion_entries_is_a_named_problem_not_a_hang(tmp_path, engine, ruleset):
    """sgdisk's GPT with the header's entry count patched to 2**32-1, on a 1 TiB qcow2 (reads of
    its unallocated clusters are zeros, so nothing ends the walk of the entries but a bound)."""
    need("sgdisk", "qemu-img")
    raw = tmp_path / "gpt.raw"
    raw.write_bytes(b"")
    os.truncate(raw, 8 * MiB)
    images.run("sgdisk", "-o", "-n", "1:2048:0", "-t", "1:8300", raw)
    put((2**32 - 1).to_bytes(4, "little"), raw, 512 + 80)
    image = images.convert(raw, tmp_path / "gpt.qcow2", "qcow2")
    images.run("qemu-img", "resize", "-q", image, "1T")
    verdict = scan(engine, ruleset, path=str(image))
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert any("GPT claims 4294967295 partition entries" in g.detail for g in verdict.coverage.gaps)


def test_a_looping_ebr_chain_keeps_its_partitions_and_names_the_loop(tmp_path, engine, ruleset):
    """The last EBR's link patched back to the first: libblkid (partx) and the scanner both stop."""
    need("sfdisk", "partx", "mkfs.ext4")
    disk = tmp_path / "loop.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 64 * MiB)
    table = "label: dos\nstart=2048, size=8192, type=83\nstart=10240, size=110000, type=5\n"
    table += "".join(f"start={s}, size=8192, type=83\n" for s in (90000, 12288, 40000))
    images.run("sfdisk", "-q", disk, input=table)
    for name, start in {"first.com": 2048, "far.com": 90000, "near.com": 12288, "mid.com": 40000}.items():
        put(one_file_fs(tmp_path, name, eicar()), disk, start * 512)
    raw = bytearray(disk.read_bytes())
    ebr = 10240
    for _ in range(2):  # to the third EBR
        ebr = 10240 + int.from_bytes(raw[ebr * 512 + 446 + 16 + 8 : ebr * 512 + 446 + 16 + 12], "little")
    raw[ebr * 512 + 446 + 16 : ebr * 512 + 446 + 32] = (
        bytes([0, 0, 0, 0, 5, 0, 0, 0]) + (0).to_bytes(4, "little") + (8192).to_bytes(4, "little")
    )
    disk.write_bytes(bytes(raw))
    assert sorted(partx(disk)) == [1, 2, 5, 6, 7]  # libblkid sees the same partitions
    verdict = scan(engine, ruleset, path=str(disk))
    assert units(verdict) == {"p1:/first.com", "p5:/far.com", "p6:/near.com", "p7:/mid.com"}
    assert any("loops back" in g.detail for g in verdict.coverage.gaps)
