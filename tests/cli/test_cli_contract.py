"""The CLI contract scripts rely on: --version, exit 2 for every error, clamscan options with their
clamscan meaning, and remote commands exiting like `avscan scan` (0 clean, 1 found, 2 otherwise)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.samples import eicar
from support.service import Service

REPO = Path(__file__).resolve().parents[2]


def avscan(tmp_path: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "--state-dir", str(tmp_path / "state"), *args],
        capture_output=True,
        input=stdin,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "cache").mkdir(parents=True)
    (root / "top.com").write_bytes(eicar())
    (root / "cache" / "deep.bin").write_bytes(eicar())
    (root / "notes.txt").write_text("nothing\n")
    return root


def test_version_and_errors_exit_2(tmp_path):
    version = avscan(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("avscan ")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nlisten = 5\n")
    config_error = avscan(tmp_path, "--config", str(bad), "scan", str(tmp_path))
    assert config_error.returncode == 2, config_error.stderr
    assert "server.listen" in config_error.stderr and "Traceback" not in config_error.stderr
    assert avscan(tmp_path, "scan", "--no-such-option").returncode == 2
    from click.testing import CliRunner

    from scanner.cli.main import cli

    in_process = CliRunner().invoke(cli, ["--config", str(bad), "scan", str(tmp_path)])
    assert in_process.exit_code == 2  # the same contract for callers embedding the click group


def test_exclude_and_exclude_dir_follow_clamscan(tree, tmp_path):
    result = avscan(tmp_path, "scan", "-r", "--exclude-dir", "/cache$", str(tree))
    assert result.returncode == 1
    assert "top.com: EICAR_Test_File FOUND" in result.stdout and "deep.bin" not in result.stdout
    result = avscan(tmp_path, "scan", "--exclude", r"\.com$", "--exclude-dir", "cache", str(tree))
    assert result.returncode == 0, result.stdout
    assert "Verdict: CLEAN" in result.stdout


def test_max_filesize_skips_as_a_gap_never_clean(tree, tmp_path):
    result = avscan(tmp_path, "scan", "--max-filesize", "10", str(tree / "notes.txt"), str(tree / "top.com"))
    assert result.returncode == 2
    assert "Verdict: INCOMPLETE" in result.stdout
    assert avscan(tmp_path, "scan", "--max-filesize", "lots", str(tree)).returncode == 2


def test_stdin_print_strings_no_summary_and_log(tree, tmp_path):
    log = tmp_path / "scan.log"
    result = avscan(tmp_path, "scan", "-s", "--no-summary", "--log", str(log), "-", stdin=eicar())
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == "stdin: EICAR_Test_File FOUND"
    assert "$name: EICAR-STANDARD-ANTIVIRUS-TEST-FILE!" in result.stdout
    assert "SCAN SUMMARY" not in result.stdout
    assert log.read_text() == result.stdout + result.stderr


def test_remote_scans_exit_like_scan(tree, tmp_path):
    service = Service(tmp_path / "service-state")
    try:
        server = ["--server", service.address]
        found = avscan(tmp_path, "scans", "start", *server, str(tree / "top.com"))
        assert found.returncode == 1, found.stdout + found.stderr
        scan_id = found.stdout.split()[1]
        assert avscan(tmp_path, "scans", "get", *server, scan_id).returncode == 1
        clean = avscan(tmp_path, "scans", "start", *server, str(tree / "notes.txt"))
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert avscan(tmp_path, "scans", "get", *server, "no-such-scan").returncode == 2
    finally:
        service.close()


def test_default_config_comes_from_avscan_config(tmp_path, monkeypatch):
    config = tmp_path / "site.toml"
    config.write_text("[files]\nmax_file_size = 10\n")
    target = tmp_path / "big.txt"
    target.write_text("more than ten bytes of text\n")
    monkeypatch.setenv("AVSCAN_CONFIG", str(config))
    result = avscan(tmp_path, "scan", str(target))
    assert result.returncode == 2 and "larger than max_file_size 10" in result.stdout
    monkeypatch.setenv("AVSCAN_CONFIG", str(tmp_path / "absent.toml"))
    missing = avscan(tmp_path, "scan", str(target))
    assert missing.returncode == 2 and "AVSCAN_CONFIG" in missing.stderr


def test_default_state_dir_is_system_for_root_and_xdg_otherwise(tmp_path, monkeypatch):
    from scanner import config

    monkeypatch.delenv("AVSCAN_STATE_DIR", raising=False)
    monkeypatch.setattr(config.os, "geteuid", lambda: 0)
    assert config.default_state_dir() == Path("/var/lib/avscan")
    monkeypatch.setattr(config.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert config.default_state_dir() == tmp_path / "xdg" / "avscan"
    monkeypatch.setenv("AVSCAN_STATE_DIR", str(tmp_path / "explicit"))
    assert config.default_state_dir() == tmp_path / "explicit"


def test_progress_bar_only_on_a_terminal(tree, tmp_path):
    command = f"{sys.executable} -m scanner --state-dir {tmp_path / 'state'} scan {tree}"
    on_tty = subprocess.run(
        ["script", "-qec", command, "/dev/null"], capture_output=True, cwd=REPO, timeout=120, check=False
    )
    assert on_tty.returncode == 1
    assert b"\r[" in on_tty.stdout and b" units " in on_tty.stdout
    piped = avscan(tmp_path, "scan", str(tree))
    assert "\r[" not in piped.stdout + piped.stderr


def test_serve_on_a_busy_port_is_one_line_and_exit_2(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = avscan(tmp_path, "serve", "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert f"Failed to bind to address 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
