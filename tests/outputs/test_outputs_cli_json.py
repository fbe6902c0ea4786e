"""`avscan scan --json`: valid ECS 8.11 for every finding and for every scan's end, whatever the verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.samples import eicar

from outputs.ecs_reference import problems

REPO = Path(__file__).resolve().parents[2]


def scan_json(tmp_path: Path, *args: str) -> tuple[int, list[dict]]:
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "--state-dir", str(tmp_path / "state"), "scan", "--json", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()]


def test_findings_and_end_are_valid_ecs_with_host_threat_and_file_size(tmp_path):
    root = tmp_path / "samples"
    root.mkdir()
    (root / "one.com").write_bytes(eicar())
    (root / "notes.txt").write_bytes(b"nothing here\n")
    code, docs = scan_json(tmp_path, str(root))
    assert code == 1
    for doc in docs:
        assert problems(doc) == [], doc
    finding, end = docs
    assert finding["event"]["kind"] == "alert"
    assert finding["file"]["size"] == len(eicar())
    assert finding["threat"]["indicator"]["file"]["path"] == str(root / "one.com")
    assert finding["host"]["name"]
    assert end["event"]["action"] == "scan-finished"
    assert end["avscan"]["scan"]["verdict"] == "MALICIOUS"
    assert end["avscan"]["scan"]["coverage"]["units_scanned"] == 2


def test_rule_version_is_the_rules_own_meta(tmp_path):
    rule = tmp_path / "r.yar"
    rule.write_text('rule Versioned { meta: version = "3.2" strings: $a = "needle-7" condition: $a }\n')
    target = tmp_path / "hay.txt"
    target.write_text("a needle-7 here\n")
    code, docs = scan_json(tmp_path, "--rules", str(rule), str(target))
    assert code == 1
    assert docs[0]["rule"]["version"] == "3.2"


def test_clean_and_incomplete_scans_emit_their_end_event(tmp_path):
    clean = tmp_path / "clean.txt"
    clean.write_text("quarterly report\n")
    code, docs = scan_json(tmp_path, str(clean))
    assert code == 0
    assert [d["avscan"]["scan"]["verdict"] for d in docs] == ["CLEAN"]
    code, docs = scan_json(tmp_path, str(clean), str(tmp_path / "missing"))
    assert code == 2
    (end,) = docs
    assert problems(end) == []
    assert end["avscan"]["scan"]["verdict"] == "INCOMPLETE"
    assert end["event"]["reason"]
    assert end["avscan"]["scan"]["coverage"]["gaps"][0]["kind"] == "UNREADABLE"


def test_memory_findings_name_the_vm_given_as_host(tmp_path):
    image = tmp_path / "guest.raw"
    with image.open("wb") as f:
        f.truncate(4 << 20)
        f.seek(1 << 20)
        f.write(eicar())
    code, docs = scan_json(tmp_path, "--memory", str(image), "--format", "raw", "--host-name", "web-01")
    assert code == 1
    finding, end = docs
    for doc in docs:
        assert problems(doc) == [], doc
        assert doc["host"]["name"] == "web-01"
    assert finding["avscan"]["finding"]["address"] == 1 << 20
    assert finding["threat"]["indicator"]["type"] == "artifact"  # physical memory: no owning process known
    assert end["avscan"]["scan"]["target_kind"] == "memory"


def test_an_error_scan_emits_its_end_with_outcome_failure(tmp_path):
    code, docs = scan_json(tmp_path, "--memory", str(tmp_path / "absent.raw"))
    assert code == 2
    (end,) = docs
    assert problems(end) == []
    assert end["avscan"]["scan"]["verdict"] == "ERROR"
    assert end["event"]["outcome"] == "failure"
    assert "absent.raw" in end["event"]["reason"]
