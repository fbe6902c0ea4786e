"""Build (or reuse) the lab's boot image: a Debian cloud kernel and a busybox initramfs.

The image lives in ``<cache>/images/<key>/`` where ``key`` hashes every input: the two package
files, the guest scripts and :data:`FORMAT`. Same inputs, same directory, no rebuild. Builds are
serialised by a lock file so concurrent test processes share one build.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from scanner.lab import debs, newc

FORMAT = "avscan-lab-image-1"
GUEST_SCRIPTS = ("init", "avscan-marker", "avscan-clean")
_DIRS = ("bin", "dev", "proc", "sys", "run", "sbin", "tmp", "usr", "usr/bin", "usr/sbin")


@dataclass(frozen=True)
class LabImage:
    """A built image: ``kernel`` (bzImage) and ``initramfs`` (gzip newc cpio)."""

    directory: Path
    key: str
    kernel: Path
    initramfs: Path
    kernel_package: str
    busybox_package: str


def cache_dir() -> Path:
    """``$AVSCAN_LAB_CACHE``, else ``~/.cache/avscan-lab``."""
    env = os.environ.get("AVSCAN_LAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "avscan-lab"


def guest_script(name: str) -> bytes:
    return resources.files("scanner.lab").joinpath("guest").joinpath(name).read_bytes()


@contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "build.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _key(kernel: debs.DebRef, busybox: debs.DebRef) -> str:
    h = hashlib.sha256(FORMAT.encode())
    for part in (kernel.filename, busybox.filename):
        h.update(b"\0" + part.encode())
    for name in GUEST_SCRIPTS:
        h.update(b"\0" + name.encode() + b"\0" + guest_script(name))
    return h.hexdigest()[:16]


def initramfs_bytes(busybox: bytes) -> bytes:
    """The gzip-compressed newc archive: busybox, the guest scripts, /dev/console."""
    entries = [newc.directory(d) for d in _DIRS]
    entries += [
        newc.char_device("dev/console", 5, 1),
        newc.regular("bin/busybox", busybox, 0o755),
        newc.symlink("bin/sh", "busybox"),
        newc.regular("init", guest_script("init"), 0o755),
        newc.regular("bin/avscan-marker", guest_script("avscan-marker"), 0o755),
        newc.regular("bin/avscan-clean", guest_script("avscan-clean"), 0o755),
    ]
    raw = io.BytesIO()
    newc.write(raw, entries)
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def _load(directory: Path) -> LabImage:
    meta = json.loads((directory / "manifest.json").read_text())
    return LabImage(
        directory=directory,
        key=directory.name,
        kernel=directory / "vmlinuz",
        initramfs=directory / "initramfs.cpio.gz",
        kernel_package=meta["kernel_package"],
        busybox_package=meta["busybox_package"],
    )


def build_image(cache: Path | None = None, flavour: str = debs.FLAVOUR) -> LabImage:
    """Return the image for the current inputs (kernel ``flavour``), building it first if it is not cached."""
    cache = cache or cache_dir()
    kernel_ref, busybox_ref = debs.resolve(flavour)
    key = _key(kernel_ref, busybox_ref)
    final = cache / "images" / key
    with _locked(cache):
        if (final / "manifest.json").exists():
            return _load(final)
        kernel_deb = debs.download(kernel_ref, cache / "debs")
        busybox_deb = debs.download(busybox_ref, cache / "debs")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
        tmp.chmod(0o755)
        try:
            member = debs.extract_member(kernel_deb, "./boot/vmlinuz-*", tmp / "vmlinuz")
            debs.extract_member(busybox_deb, "./bin/busybox", tmp / "busybox")
            (tmp / "initramfs.cpio.gz").write_bytes(initramfs_bytes((tmp / "busybox").read_bytes()))
            (tmp / "busybox").unlink()
            manifest = {
                "format": FORMAT,
                "kernel_package": f"{kernel_ref.name}={kernel_ref.version}",
                "kernel_member": member,
                "busybox_package": f"{busybox_ref.name}={busybox_ref.version}",
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            tmp.replace(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _load(final)
