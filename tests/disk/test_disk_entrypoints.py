"""The disk target as users reach it: `avscan scan --disk` and StartScan over gRPC."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from scanner.api.client import disk_target
from scanner.targets.identity import SETTLE_NS
from scanner.v1 import verdict_pb2
from tests.disk import images
from tests.disk.aged import aged
from tests.disk.conftest import need
from tests.support.samples import eicar
from tests.support.service import Service

REPO = Path(__file__).resolve().parents[2]


def qcow2_with_eicar(tmp_path: Path) -> Path:
    need("mkfs.ext4", "qemu-img", "sgdisk")
    src = tmp_path / "tree"
    (src / "home" / "user").mkdir(parents=True)
    (src / "home" / "user" / "invoice.com").write_bytes(eicar())
    (src / "etc").mkdir()
    (src / "etc" / "hostname").write_text("guest\n")
    raw = images.gpt(images.ext4(src, tmp_path / "fs.img"), tmp_path / "disk.raw")
    return images.convert(raw, tmp_path / "disk.qcow2", "qcow2")


def test_cli_scan_disk_names_the_path_inside_the_guest(tmp_path):
    image = qcow2_with_eicar(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "--state-dir", str(tmp_path / "state"), "scan", "--disk", str(image)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    found = [line for line in result.stdout.splitlines() if line.endswith("FOUND")]
    assert len(found) == 1 and found[0].endswith("/home/user/invoice.com: EICAR_Test_File FOUND"), found


def test_grpc_disk_scan_reports_guest_path_and_sha256(tmp_path):
    import hashlib

    image = qcow2_with_eicar(tmp_path)
    service = Service(tmp_path / "state")
    try:
        with service.client() as client:
            done = client.wait(client.start_scan(disk_target(str(image))).scan_id, timeout=300)
            findings = [f for page in client.findings(done.scan_id) for f in page.findings]
    finally:
        service.close()
    assert done.verdict.kind == verdict_pb2.VERDICT_KIND_MALICIOUS
    assert done.verdict.coverage.complete
    [finding] = findings
    assert finding.context["path"] == "/home/user/invoice.com"
    assert finding.context["sha256"] == hashlib.sha256(eicar()).hexdigest()
    assert done.target.disk.path == str(image)


def test_grpc_rescan_of_an_unchanged_image_gives_back_the_same_result_without_reading_it(tmp_path):
    """Through the service: the second scan of a settled, unchanged image is answered whole from
    the appliance's result cache; touching the image makes the next scan read it again.

    The image is settled for real: its inode's ctime is an hour old (``aged``: set with debugfs on
    a loop-mounted ext4), so the service, in its own process and on the real clock, sees an image
    left alone, as users scan them; no sleep."""
    with aged(qcow2_with_eicar(tmp_path), tmp_path) as image:
        assert time.time_ns() - image.stat().st_ctime_ns > 10 * SETTLE_NS
        runs = rescans(image, tmp_path / "state")
    (first, found1), (again, found2), (touched, found3) = runs
    assert "cache.reused" not in first.details and "cache.reused" in again.details
    assert "cache.reused" not in touched.details
    assert found1 == found2 == found3 and len(found1) == 1
    assert again.kind == first.kind == verdict_pb2.VERDICT_KIND_MALICIOUS and again.coverage.complete
    assert again.coverage.cache_hits == again.coverage.units_total == first.coverage.units_total
    assert again.details["disk.format"] == "qcow2"


def rescans(image: Path, state: Path) -> list[tuple[verdict_pb2.Verdict, list[tuple[str, str, str]]]]:
    """Scan ``image`` three times through a service; touch it (ctime to now) before the third."""
    service = Service(state)
    try:
        with service.client() as client:
            runs = []
            for touch in (False, False, True):
                if touch:
                    os.utime(image)  # ctime moves: the image is no longer vouched for
                done = client.wait(client.start_scan(disk_target(str(image))).scan_id, timeout=300)
                findings = [f for page in client.findings(done.scan_id) for f in page.findings]
                runs.append((done.verdict, [(f.rule, f.unit, f.context["sha256"]) for f in findings]))
    finally:
        service.close()
    return runs
