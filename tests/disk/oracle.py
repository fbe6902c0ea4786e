"""Independent readers of a filesystem image: the kernel's own driver (a read-only loop mount) and
``yara -r`` over the mounted tree; and what avscan's disk target reads from the same image.

Paths are shown as avscan shows them: UTF-8, with each byte that is not as ``\\xNN``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from scanner.targets.base import Skipped
from scanner.targets.disk import DiskFileUnit, DiskTarget
from tests.disk.images import run


def shown(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


@contextmanager
def mounted(image: Path, *options: str) -> Iterator[Path]:
    """``image`` mounted read-only through a loop device (detached again by ``umount``)."""
    mnt = Path(tempfile.mkdtemp(prefix="avscan-oracle-"))
    run("mount", "-o", ",".join(("ro", "loop", *options)), image, mnt)
    try:
        yield mnt
    finally:
        run("umount", mnt)
        mnt.rmdir()


@contextmanager
def mounted_rw(image: Path) -> Iterator[Path]:
    """``image`` mounted read-write through a loop device, to put files in with the kernel."""
    mnt = Path(tempfile.mkdtemp(prefix="avscan-build-"))
    run("mount", "-o", "loop", image, mnt)
    try:
        yield mnt
    finally:
        run("umount", mnt)
        mnt.rmdir()


@contextmanager
def recovered(image: Path) -> Iterator[Path]:
    """The Sleuth Kit's copy of every allocated file of ``image`` (``tsk_recover -a``)."""
    out = Path(tempfile.mkdtemp(prefix="avscan-tsk-"))
    try:
        run("tsk_recover", "-a", image, out)
        yield out
    finally:
        shutil.rmtree(out)


def kernel_files(root: Path) -> dict[str, str]:
    """path -> SHA-256 of every regular file under ``root`` (a mount or a recovered copy;
    symlinks not followed)."""
    files = {}
    base = os.fsencode(root)
    for top, _, names in os.walk(base):
        for name in names:
            path = os.path.join(top, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    files[shown(path[len(base) :])] = hashlib.sha256(f.read()).hexdigest()
    return files


def kernel_yara(rules: Path, root: Path) -> set[tuple[str, str]]:
    """(rule, path) of ``yara -r`` on the mounted tree, paths as bytes (any name survives)."""
    done = subprocess.run(["yara", "-r", "-N", str(rules), str(root)], capture_output=True, check=True)
    base = os.fsencode(root)
    found = set()
    for line in done.stdout.splitlines():
        rule, _, path = line.partition(b" ")
        found.add((rule.decode(), shown(path[len(base) :])))
    return found


@dataclass
class Read:
    """What avscan's disk target offered for one image."""

    files: dict[str, str] = field(default_factory=dict)  # "<volume>:<path>" -> SHA-256
    gaps: list[Skipped] = field(default_factory=list)
    accounting: dict[str, int] = field(default_factory=dict)

    def paths(self, volume: str = "disk") -> dict[str, str]:
        prefix = f"{volume}:"
        return {k[len(prefix) :]: v for k, v in self.files.items() if k.startswith(prefix)}


def avscan_read(image: Path) -> Read:
    """Every unit of the disk target read whole (SHA-256), every gap, and the accounting."""
    read = Read()
    with DiskTarget(str(image)) as target:
        for item in target.plan():
            if isinstance(item, Skipped):
                read.gaps.append(item)
            elif isinstance(item, DiskFileUnit):
                with item.window(0, item.size) as view:
                    read.files[item.name] = hashlib.sha256(view).hexdigest()
        read.accounting = dict(target.accounting())
    return read
