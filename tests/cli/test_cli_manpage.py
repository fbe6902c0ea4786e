"""The man page is generated from the CLI and renders cleanly with man(1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_manpage_generator_runs_and_man_renders_it_without_warnings(tmp_path):
    subprocess.run([sys.executable, "-m", "scanner.cli.manpage", str(tmp_path)], cwd=REPO, check=True, timeout=60)
    page = tmp_path / "avscan.1"
    rendered = subprocess.run(
        ["man", "--warnings", "-l", str(page)],
        capture_output=True,
        text=True,
        env={**os.environ, "MANWIDTH": "120"},
        check=True,
        timeout=60,
    )
    assert rendered.stderr == "", rendered.stderr
    text = rendered.stdout
    for expected in ("avscan scan", "avscan scans start", "--max-filesize", "--metrics-listen", "EXIT STATUS"):
        assert expected in text, expected
