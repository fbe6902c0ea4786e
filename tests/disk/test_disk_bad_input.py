"""Corrupt images are normal: scan what can be read, name what could not, never CLEAN, never hang."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from scanner.errors import SourceError
from scanner.targets import FilePolicy, TargetSpec, build_target
from scanner.verdicts import GapKind, VerdictKind
from tests import hardware
from tests.disk import images
from tests.disk.conftest import need
from tests.disk.scanning import found, scan


@pytest.fixture(scope="module")
def ext4_image(disk_dir: Path, samples: Path) -> Path:
    need("mkfs.ext4")
    return images.ext4(images.stage(samples, disk_dir / "bad-src"), disk_dir / "bad-ext4.img")


def incomplete(verdict) -> None:
    assert verdict.kind is not VerdictKind.CLEAN and not verdict.coverage.complete
    assert verdict.coverage.gaps and all(g.detail for g in verdict.coverage.gaps)


def test_truncated_raw_image_reports_the_files_it_lost(ext4_image, disk_dir, engine, ruleset):
    cut = disk_dir / "cut.img"
    need("debugfs")
    block_size = int(re.search(r"Block size:\s+(\d+)", images.run("debugfs", "-R", "stats", ext4_image))[1])
    first = int(re.search(r"\(0-\d+\):(\d+)", images.run("debugfs", "-R", "stat /docs/marker.bin", ext4_image))[1])
    cut.write_bytes(ext4_image.read_bytes()[: (first + 10) * block_size])  # inside marker.bin's data
    verdict = scan(engine, ruleset, path=str(cut))
    incomplete(verdict)
    assert any(g.unit == "disk:/docs/marker.bin" and "past the end" in g.detail for g in verdict.coverage.gaps)


def test_truncated_vmdk(ext4_image, disk_dir, engine, ruleset):
    need("qemu-img")
    vmdk = images.convert(ext4_image, disk_dir / "cut.vmdk", "vmdk", "-o", "subformat=monolithicSparse")
    data = vmdk.read_bytes()
    vmdk.write_bytes(data[: len(data) // 2])
    verdict = scan(engine, ruleset, path=str(vmdk))
    incomplete(verdict)
    assert any("past the end" in g.detail for g in verdict.coverage.gaps)


def test_qcow2_whose_l2_table_points_past_the_end(ext4_image, disk_dir, engine, ruleset):
    need("qemu-img")
    image = images.convert(ext4_image, disk_dir / "badl2.qcow2", "qcow2")
    data = bytearray(image.read_bytes())
    cluster_bits = struct.unpack_from(">I", data, 20)[0]
    l1_offset = struct.unpack_from(">Q", data, 40)[0]
    l2_offset = struct.unpack_from(">Q", data, l1_offset)[0] & 0x00FFFFFFFFFFFE00
    entries = [(i, struct.unpack_from(">Q", data, l2_offset + 8 * i)[0]) for i in range(1 << (cluster_bits - 3))]
    allocated = [i for i, e in entries if e & 0x00FFFFFFFFFFFE00]
    past_end = (len(data) + (64 << cluster_bits)) | (1 << 63)
    for i in allocated[len(allocated) // 2 :]:  # the second half of the data clusters now point past EOF
        struct.pack_into(">Q", data, l2_offset + 8 * i, past_end)
    image.write_bytes(bytes(data))
    verdict = scan(engine, ruleset, path=str(image))
    incomplete(verdict)
    assert any("past the end" in g.detail for g in verdict.coverage.gaps)


def test_looping_directory_is_reported_and_the_walk_ends(ext4_image, disk_dir, engine, ruleset):
    need("debugfs")
    looped = disk_dir / "loop.img"
    looped.write_bytes(ext4_image.read_bytes())
    images.run("debugfs", "-w", "-R", "link /docs /docs/nested/deeper/up", looped)
    verdict = scan(engine, ruleset, path=str(looped))
    incomplete(verdict)
    [gap] = [g for g in verdict.coverage.gaps if "loop" in g.detail]
    assert gap.unit == "disk:/docs/nested/deeper/up" and gap.kind is GapKind.UNREADABLE
    assert ("EICAR_Test_File", "/eicar.com") in found(verdict)  # the rest is still scanned


def test_damaged_mft(disk_dir, samples, engine, ruleset):
    need("mkfs.ntfs", "ntfs-3g")
    hardware.require("/dev/fuse")
    image = images.ntfs(images.stage(samples, disk_dir / "mft-src", symlinks=False), disk_dir / "mft.img")
    data = bytearray(image.read_bytes())
    cluster = struct.unpack_from("<H", data, 11)[0] * data[13]
    mft = struct.unpack_from("<Q", data, 48)[0] * cluster
    for record in range(64, 128):  # the records ntfs-3g gives user files (after the reserved ones)
        offset = mft + record * 1024
        if data[offset : offset + 4] == b"FILE":
            data[offset + 20 : offset + 1024] = b"\xa5" * (1024 - 20)
    image.write_bytes(bytes(data))
    verdict = scan(engine, ruleset, path=str(image))
    incomplete(verdict)


def test_not_a_disk_at_all_is_incomplete_not_clean(disk_dir, engine, ruleset):
    junk = disk_dir / "junk.img"
    junk.write_bytes(b"\x00\x01garbage" * 100_000)
    verdict = scan(engine, ruleset, path=str(junk))
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert "no supported filesystem" in verdict.coverage.gaps[0].detail


def test_unopenable_images_are_source_errors(disk_dir):
    bad = disk_dir / "bad.qcow2"
    bad.write_bytes(b"QFI\xfb" + b"\xff" * 60)
    for path in (bad, disk_dir / "missing.img"):
        with build_target(TargetSpec("disk", {"path": str(path)})) as target, pytest.raises(SourceError):
            list(target.plan())


def test_policy_limits_and_exclusions_are_accounted(ext4_image, engine, ruleset):
    policy = FilePolicy(max_file_size=100_000, exclude_globs=("/docs/nested/*",), exclude_extensions=("com",))
    verdict = scan(engine, ruleset, policy, path=str(ext4_image))
    gaps = {g.unit: g for g in verdict.coverage.gaps}
    assert gaps["disk:/docs/marker.bin"].kind is GapKind.SKIPPED_LIMIT  # 300 000 bytes
    assert "disk:/eicar.com" not in gaps  # excluded, not a gap by default
    assert {f.rule for f in verdict.findings} == {"Elf_True_Exact"}
    strict = scan(
        engine, ruleset, FilePolicy(exclude_extensions=("com",), exclusions_are_gaps=True), path=str(ext4_image)
    )
    assert any(g.unit == "disk:/eicar.com" and g.kind is GapKind.SKIPPED_POLICY for g in strict.coverage.gaps)


def test_walk_limits_depth_and_count(ext4_image, engine, ruleset):
    deep = scan(engine, ruleset, FilePolicy(max_depth=2), path=str(ext4_image))
    assert [g.unit for g in deep.coverage.gaps if "deeper than 2" in g.detail] == ["disk:/docs/nested"]
    assert deep.kind is VerdictKind.MALICIOUS and not deep.coverage.complete
    many = scan(engine, ruleset, FilePolicy(max_files=5), path=str(ext4_image))
    assert any("more than 5 entries" in g.detail for g in many.coverage.gaps)
    assert many.coverage.units_scanned <= 5


def test_bad_params_name_the_field():
    from scanner.errors import InvalidArgument

    for params, field in [
        ({}, "target.disk.path"),
        ({"path": "x", "format": "iso"}, "target.disk.format"),
        ({"qmp": "/s"}, "target.disk.device"),
        ({"path": 3}, "target.disk.path"),
    ]:
        with pytest.raises(InvalidArgument) as e:
            build_target(TargetSpec("disk", params))
        assert e.value.field == field
