"""Benchmark data: real system binaries concatenated, so rules see the bytes they meet in practice."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

MiB = 1024 * 1024
SYSTEM_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/share")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RULESETS_DIR = REPO_ROOT.parent / "shared" / "rulesets"


def system_files(dirs: tuple[str, ...] = SYSTEM_DIRS) -> Iterator[Path]:
    """Regular, readable, non-empty files under ``dirs``, in a stable order, each once."""
    seen: set[tuple[int, int]] = set()
    for top in dirs:
        for dirpath, dirnames, names in os.walk(top):
            dirnames.sort()
            for name in sorted(names):
                path = Path(dirpath) / name
                try:
                    st = path.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if not path.is_file() or path.is_symlink() or st.st_size == 0 or key in seen:
                    continue
                seen.add(key)
                yield path


def write_corpus(out: Path, size: int) -> int:
    """Write exactly ``size`` bytes of concatenated system files to ``out``; returns file count."""
    written = count = 0
    with out.open("wb") as f:
        for path in system_files():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            data = data[: size - written]
            f.write(data)
            written += len(data)
            count += 1
            if written >= size:
                return count
    raise RuntimeError(f"only {written} bytes of system files found, {size} wanted")
