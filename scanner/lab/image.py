"""Build (or reuse) the lab's boot image: a Debian cloud kernel and a busybox initramfs.

The image lives in ``<cache>/images/<key>/`` where ``key`` hashes every input: the two package
files, the guest scripts, the kernel modules taken from the kernel package (:data:`GUEST_MODULES`)
and :data:`FORMAT`. Same inputs, same directory, no rebuild. Builds are serialised by a lock file so
concurrent test processes share one build.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from scanner.lab import debs, newc
from scanner.lab.errors import LabError

FORMAT = "avscan-lab-image-2"
GUEST_SCRIPTS = ("init", "avscan-marker", "avscan-clean", "avscan-work")
# Kernel modules (paths under /lib/modules/<version>/) copied from the kernel package into the
# initramfs as /lib/modules/<name>.ko; init loads them when asked (avscan.modules=1). Neither has
# a dependency, both are in the cloud and the generic flavour.
GUEST_MODULES = ("kernel/drivers/net/dummy.ko", "kernel/lib/crc-itu-t.ko")
MODULES_DIR = "lib/modules"
_DIRS = ("bin", "dev", "proc", "sys", "run", "sbin", "tmp", "usr", "usr/bin", "usr/sbin", "lib", MODULES_DIR)


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
    for path in GUEST_MODULES:
        h.update(b"\0module\0" + path.encode())
    return h.hexdigest()[:16]


def module_file(member: str, data: bytes) -> tuple[str, bytes]:
    """``(file name, ELF bytes)`` of a module member: ``.ko`` as is, ``.ko.xz``/``.ko.gz`` decompressed.

    busybox ``insmod`` hands the file to ``init_module`` as it is, so it must be a plain ELF.
    """
    name = member.rsplit("/", 1)[-1]
    if name.endswith(".ko.xz"):
        name, data = name[:-3], lzma.decompress(data)
    elif name.endswith(".ko.gz"):
        name, data = name[:-3], gzip.decompress(data)
    if not name.endswith(".ko") or not data.startswith(b"\x7fELF"):
        raise LabError(f"{member}: not a plain or xz/gzip-compressed ELF kernel module")
    return name, data


def initramfs_bytes(busybox: bytes, modules: dict[str, bytes] | None = None) -> bytes:
    """The gzip-compressed newc archive: busybox, the guest scripts, /dev/console, ``modules`` (name -> .ko)."""
    entries = [newc.directory(d) for d in _DIRS]
    entries += [
        newc.char_device("dev/console", 5, 1),
        newc.regular("bin/busybox", busybox, 0o755),
        newc.symlink("bin/sh", "busybox"),
        newc.regular("init", guest_script("init"), 0o755),
        newc.regular("bin/avscan-marker", guest_script("avscan-marker"), 0o755),
        newc.regular("bin/avscan-clean", guest_script("avscan-clean"), 0o755),
        newc.regular("bin/avscan-work", guest_script("avscan-work"), 0o755),
    ]
    entries += [newc.regular(f"{MODULES_DIR}/{name}", data, 0o644) for name, data in sorted((modules or {}).items())]
    raw = io.BytesIO()
    newc.write(raw, entries)
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def load_image(directory: Path, initramfs: str = "initramfs.cpio.gz", userland: str = "busybox_package") -> LabImage:
    """A built image from its cache directory (``manifest.json`` names its packages; ``userland``
    is the manifest key of the userland's package)."""
    meta = json.loads((directory / "manifest.json").read_text())
    return LabImage(
        directory=directory,
        key=directory.name,
        kernel=directory / "vmlinuz",
        initramfs=directory / initramfs,
        kernel_package=meta["kernel_package"],
        busybox_package=meta[userland],
    )


def build_image(cache: Path | None = None, flavour: str = debs.FLAVOUR) -> LabImage:
    """Return the image for the current inputs (kernel ``flavour``), building it first if it is not cached."""
    cache = cache or cache_dir()
    kernel_ref, busybox_ref = debs.resolve(flavour)
    key = _key(kernel_ref, busybox_ref)
    final = cache / "images" / key
    with _locked(cache):
        if (final / "manifest.json").exists():
            return load_image(final)
        kernel_deb = debs.download(kernel_ref, cache / "debs")
        busybox_deb = debs.download(busybox_ref, cache / "debs")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
        tmp.chmod(0o755)
        try:
            member = debs.extract_member(kernel_deb, "./boot/vmlinuz-*", tmp / "vmlinuz")
            debs.extract_member(busybox_deb, "./bin/busybox", tmp / "busybox")
            patterns = tuple(f"./lib/modules/*/{path}*" for path in GUEST_MODULES)
            found = debs.read_members(kernel_deb, patterns)
            modules = dict(module_file(*found[p]) for p in patterns)
            (tmp / "initramfs.cpio.gz").write_bytes(initramfs_bytes((tmp / "busybox").read_bytes(), modules))
            (tmp / "busybox").unlink()
            manifest = {
                "format": FORMAT,
                "kernel_package": f"{kernel_ref.name}={kernel_ref.version}",
                "kernel_member": member,
                "busybox_package": f"{busybox_ref.name}={busybox_ref.version}",
                "modules": [found[p][0] for p in patterns],
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            tmp.replace(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load_image(final)
