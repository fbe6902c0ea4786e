"""Crash-safe file writes: temp file, fsync, rename over, fsync the directory.

After a crash at any point, a reader sees either the old file or the new one, never a mix; a
leftover temp file (``<name>.tmp.<random>``) is garbage that :func:`remove_temp_files` deletes.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TEMP_MARK = ".tmp."


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` and fsync it (the directory is the caller's job)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content."""
    tmp = path.with_name(f"{path.name}{TEMP_MARK}{secrets.token_hex(8)}")
    try:
        write_synced(tmp, data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_temp_files(directory: Path, name: str) -> list[Path]:
    """Delete leftover temp files of ``name`` in ``directory`` (from an interrupted write)."""
    removed = []
    for p in directory.glob(f"{name}{TEMP_MARK}*"):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed
