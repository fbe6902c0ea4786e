"""A running lab guest's disk: frozen by an external QMP snapshot, scanned, merged back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.disk import images
from tests.disk.conftest import need
from tests.disk.scanning import found, scan

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_live_guest_disk_snapshot_scan_and_merge(start_lab_guest, disk_dir, samples, rules_file, engine, ruleset):
    need("mkfs.ext4", "sgdisk", "qemu-img", "yara")
    live = disk_dir / "live"
    live.mkdir()
    staged = images.stage(samples, live / "src")
    truth = images.yara_truth(rules_file, staged)
    raw = images.gpt(images.ext4(staged, live / "fs.img"), live / "disk.raw")
    image = images.convert(raw, live / "guest.qcow2", "qcow2")
    guest = start_lab_guest(memory_mib=128, markers=0, variant="disk", disk=image)
    verdict = scan(engine, ruleset, qmp=str(guest.scanner_qmp_path), device="labdisk")
    assert found(verdict) == truth and verdict.coverage.complete, verdict.coverage.gaps
    assert verdict.details["disk.live"] == "merged"
    assert not list(Path(live).glob("*.avscan-*"))  # the overlay is gone
    [block] = [b for b in guest.qmp("query-block") if b.get("device") == "labdisk"]
    assert block["inserted"]["image"]["filename"] == str(image)  # pivoted back to the original image
    assert guest.status() == "running"
