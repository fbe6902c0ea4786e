"""LiME's own kernel module, built for the lab kernel, and a lab initramfs that carries it.

LiME (Linux Memory Extractor) is a kernel module: loaded with ``path=... format=lime`` it writes
the guest's physical memory, one range per top-level ``System RAM`` resource, to that path. The
lab uses it to make real LiME dumps (not ones written by :func:`scanner.acquisition.memory.lime.to_lime`).

The module is built from Debian's ``lime-forensics-dkms`` source against the headers of the exact
kernel the lab boots (``linux-headers-<release>``, its ``-common`` part and ``linux-kbuild-*``, all at
the kernel's package version). Nothing is installed on the host: the packages are downloaded and
unpacked into a scratch directory and the module is built with plain kbuild (``make -C <headers>
M=<lime source> modules``). The result lives in ``<cache>/lime/<key>/`` where ``key`` hashes every
input (the lab image key, the package files, the compiler's version and :data:`FORMAT`); builds
are serialised by the lab's lock file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scanner.errors import Unavailable
from scanner.lab import debs, newc
from scanner.lab.errors import LabError
from scanner.lab.image import LabImage, _locked, cache_dir

FORMAT = "avscan-lab-lime-1"
LIME_PACKAGE = "lime-forensics-dkms"
GUEST_PATH = "lib/lime.ko"  # where the guest's init finds the module (avscan.lime=DEVICE)
BUILD_TIMEOUT = 600.0


@dataclass(frozen=True)
class LimeBuild:
    """``module``: lime.ko for ``kernel_release``; ``initramfs``: the lab image's initramfs plus it."""

    directory: Path
    module: Path
    initramfs: Path
    kernel_release: str
    lime_package: str


def _release(image: LabImage) -> str:
    member = json.loads((image.directory / "manifest.json").read_text()).get("kernel_member", "")
    found = re.fullmatch(r"\./boot/vmlinuz-(\S+)", member)
    if not found:
        raise LabError(f"{image.directory}: manifest names no kernel member ({member!r})")
    return found.group(1)


def _headers(image: LabImage, release: str) -> list[debs.DebRef]:
    """The headers package of ``release`` at the kernel's version, and what it needs from Debian."""
    version = image.kernel_package.split("=", 1)[1]
    arch = debs.show_version(f"linux-headers-{release}", version)
    deb = debs.download(arch, cache_dir() / "debs")
    depends = debs.field(deb, "Depends")
    names = re.findall(r"(linux-(?:headers-\S+-common|kbuild-\S+))\s*\(", depends)
    if len(names) != 2:
        raise LabError(f"{deb.name}: expected a -common and a kbuild dependency, found {depends!r}")
    return [arch, *(debs.show_version(name, version) for name in names)]


def _compiler() -> str:
    cc = shutil.which("gcc-12") or shutil.which("gcc")
    if cc is None or shutil.which("make") is None:
        raise Unavailable("unavailable: building LiME needs make and gcc-12 (run .ci/setup)")
    proc = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.splitlines()[0] if proc.stdout else cc


def _key(image: LabImage, refs: list[debs.DebRef], compiler: str) -> str:
    h = hashlib.sha256(FORMAT.encode())
    for part in (image.key, compiler, *(r.filename for r in refs)):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:16]


def _make(root: Path, release: str, out: Path) -> None:
    """Unpacked packages in ``root`` -> ``out`` (lime.ko), with kbuild as DKMS would run it."""
    sources = sorted((root / "usr/src").glob("lime-forensics-*"))
    if len(sources) != 1:
        raise LabError(f"{LIME_PACKAGE}: expected one source directory under /usr/src, found {sources}")
    headers = root / "usr/src" / f"linux-headers-{release}"
    common = next((root / "usr/src").glob("linux-headers-*-common"), None)
    if common is None or not headers.is_dir():
        raise LabError(f"linux-headers-{release}: headers not found after unpacking")
    # The arch package's Makefile includes the -common one by its absolute /usr/src path; name it
    # with -f instead, so the unpacked tree is used where it is (kbuild takes srctree from it).
    argv = ["make", "-C", str(headers), "-f", str(common / "Makefile"), f"M={sources[0]}", "modules"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    module = sources[0] / "lime.ko"
    if proc.returncode != 0 or not module.exists():
        raise LabError(f"building lime.ko failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-2000:]}")
    data = module.read_bytes()
    if b"vermagic=" + release.encode() + b" " not in data:
        raise LabError(f"built lime.ko is not for kernel {release} (no matching vermagic)")
    shutil.copyfile(module, out)


def lime_initramfs(image: LabImage, module: bytes) -> bytes:
    """The image's initramfs followed by a second archive holding ``module`` at :data:`GUEST_PATH`.

    The kernel unpacks concatenated archives in order, so the guest sees the lab's files plus it.
    """
    extra = io.BytesIO()
    newc.write(extra, [newc.regular(GUEST_PATH, module, 0o644)])
    return image.initramfs.read_bytes() + gzip.compress(extra.getvalue(), compresslevel=6, mtime=0)


def build_lime(image: LabImage, cache: Path | None = None) -> LimeBuild:
    """lime.ko for ``image``'s kernel and the initramfs carrying it, built if not cached."""
    cache = cache or cache_dir()
    release = _release(image)
    compiler = _compiler()
    refs = [debs.show_version(LIME_PACKAGE, None), *_headers(image, release)]
    final = cache / "lime" / _key(image, refs, compiler)
    with _locked(cache):
        if not (final / "manifest.json").exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
            try:
                root = tmp / "root"
                for ref in refs:
                    debs.unpack(debs.download(ref, cache / "debs"), root)
                _make(root, release, tmp / "lime.ko")
                (tmp / "initramfs.cpio.gz").write_bytes(lime_initramfs(image, (tmp / "lime.ko").read_bytes()))
                shutil.rmtree(root)
                manifest = {"format": FORMAT, "kernel_release": release, "lime_package": refs[0].filename}
                (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
                tmp.chmod(0o755)
                tmp.replace(final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads((final / "manifest.json").read_text())
    return LimeBuild(
        final, final / "lime.ko", final / "initramfs.cpio.gz", meta["kernel_release"], meta["lime_package"]
    )
