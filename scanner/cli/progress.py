"""A one-line progress bar on stderr for local scans, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from scanner.engine import Progress
from scanner.engine.engine import ScanListener

WIDTH = 30
INTERVAL = 0.1


class ProgressBar(ScanListener):
    """Redraws at most every ``INTERVAL`` seconds; ``close`` erases the line before the report."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self._last = 0.0
        self._drawn = False

    @staticmethod
    def wanted(as_json: bool) -> bool:
        return not as_json and sys.stderr.isatty()

    def on_progress(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._last < INTERVAL:
            return
        self._last = now
        total = progress.bytes_total or 1
        done = min(progress.bytes_done, total)
        filled = WIDTH * done // total
        line = (
            f"\r[{'#' * filled}{'.' * (WIDTH - filled)}] {100 * done // total:3d}%  "
            f"{progress.units_done}/{progress.units_total or '?'} units  {progress.findings} found"
        )
        self.out.write(line)
        self.out.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.out.write("\r\033[K")
            self.out.flush()
