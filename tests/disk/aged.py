"""A file whose inode times the kernel really keeps in the past: the 'left alone for a while' state.

ctime cannot be set from user space, so the file is put on a small ext4 filesystem made by
``mkfs.ext4 -d``, its ctime and mtime are written into the inode with ``debugfs -w`` while the
filesystem is not mounted, and the filesystem is then loop-mounted. Every process (the service in
its own process too) sees the old times through ``stat``; a later ``utime`` or write moves ctime
to now, as on any ext4.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.disk.conftest import need, skip_or_fail

MiB = 1 << 20


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr.strip()}"


@contextmanager
def aged(path: Path, work: Path, seconds: int = 3600) -> Iterator[Path]:
    """A copy of ``path`` on a loop-mounted ext4 whose inode says it last changed ``seconds`` ago;
    unmounted (and its loop device freed) on exit."""
    need("mkfs.ext4", "debugfs", "mount", "umount")
    if not Path("/dev/loop-control").exists():
        skip_or_fail("aging a file's ctime needs a loop device (/dev/loop-control)")
    src, mnt, image = work / "aged-src", work / "aged-mnt", work / "aged.ext4"
    src.mkdir()
    mnt.mkdir()
    shutil.copyfile(path, src / path.name)
    size_mib = 2 * path.stat().st_size // MiB + 16
    _run("mkfs.ext4", "-q", "-d", str(src), str(image), f"{size_mib}M")
    past = int(time.time()) - seconds
    for field in ("ctime", "mtime"):
        _run("debugfs", "-w", "-R", f"set_inode_field /{path.name} {field} @{past}", str(image))
    _run("mount", "-o", "loop", str(image), str(mnt))
    try:
        yield mnt / path.name
    finally:
        _run("umount", str(mnt))
