"""`avscan scan` as a user runs it: exit codes, clamscan-like text, ECS JSON, --rules."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

EICAR = "X5O!P%@AP[4\\PZX54(P^)7CC)7}" + "$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
REPO = Path(__file__).resolve().parents[2]


def avscan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanner", "--state-dir", str(cwd / "state"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    root = tmp_path / "samples"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "eicar.com").write_text(EICAR)
    (root / "readme.txt").write_text("nothing to see\n")
    return root


def test_infected_directory_exits_1_with_found_line_and_summary(samples, tmp_path):
    result = avscan("scan", str(samples), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"{samples / 'sub' / 'eicar.com'}: EICAR_Test_File FOUND" in result.stdout
    assert "Infected units: 1" in result.stdout
    assert "Verdict: MALICIOUS" in result.stdout


def test_clean_directory_exits_0(samples, tmp_path):
    (samples / "sub" / "eicar.com").unlink()
    result = avscan("scan", str(samples), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verdict: CLEAN" in result.stdout
    assert "FOUND" not in result.stdout


def test_unreadable_path_exits_2_incomplete_never_clean(samples, tmp_path):
    (samples / "sub" / "eicar.com").unlink()
    result = avscan("scan", str(samples), str(tmp_path / "missing"), cwd=tmp_path)
    assert result.returncode == 2
    assert "Verdict: INCOMPLETE" in result.stdout
    assert "UNREADABLE" in result.stdout


def test_json_gives_one_ecs_object_per_finding(samples, tmp_path):
    (samples / "second.com").write_text(EICAR)
    result = avscan("scan", "--json", str(samples), cwd=tmp_path)
    assert result.returncode == 1
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(docs) == 3  # two findings, then the scan's end
    assert docs[-1]["event"]["action"] == "scan-finished"
    for doc in docs[:-1]:
        assert doc["event"]["kind"] == "alert"
        assert doc["rule"]["name"] == "EICAR_Test_File"
        assert doc["file"]["path"].endswith(".com")
        assert len(doc["file"]["hash"]["sha256"]) == 64
        assert doc["avscan"]["scan"]["ruleset"]["digest"].startswith("sha256:")


def test_rules_option_scans_with_the_given_sources(samples, tmp_path):
    rule = tmp_path / "mine.yar"
    rule.write_text('rule Readme_Words { strings: $a = "nothing to see" condition: $a }\n')
    result = avscan("scan", "--rules", str(rule), str(samples), cwd=tmp_path)
    assert result.returncode == 1
    assert f"{samples / 'readme.txt'}: Readme_Words FOUND" in result.stdout
    assert "EICAR_Test_File" not in result.stdout


def test_broken_rules_exit_2_naming_file_and_line(samples, tmp_path):
    rule = tmp_path / "bad.yar"
    rule.write_text("rule Bad {\n  condition:\n    $nope\n}\n")
    result = avscan("scan", "--rules", str(rule), str(samples), cwd=tmp_path)
    assert result.returncode == 2
    assert re.search(r'bad\.yar:[34]: error: undefined string "\$nope"', result.stderr), result.stderr


def test_memory_image_scanned_in_chunks_reports_physical_address(tmp_path):
    image = tmp_path / "mem.raw"
    with image.open("wb") as f:
        f.truncate(40 * 1024 * 1024)
        f.seek(16 * 1024 * 1024 - 30)  # across the first 16 MiB window edge
        f.write(EICAR.encode())
    result = avscan("scan", "--memory", str(image), cwd=tmp_path)
    assert result.returncode == 1
    assert f"@ {16 * 1024 * 1024 - 30:#x}: EICAR_Test_File FOUND" in result.stdout
    assert result.stdout.count("FOUND") == 1
