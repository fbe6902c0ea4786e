"""Find, download and unpack the Debian packages the lab image is made of.

Nothing is installed on the host: packages are fetched with ``apt-get download`` and single
members are copied out of ``dpkg-deb --fsys-tarfile``. ``apt-get update`` runs at most once per
process, and only when apt cannot resolve a package from the lists it already has.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scanner.errors import Unavailable
from scanner.lab.errors import LabError

FLAVOUR = "cloud-amd64"  # Debian kernel flavours: cloud-amd64 (default), amd64, rt-amd64
KERNEL_META = f"linux-image-{FLAVOUR}"
BUSYBOX = "busybox-static"
FLAVOURS = ("cloud-amd64", "amd64", "rt-amd64")
# A versioned kernel package of one flavour, e.g. linux-image-6.1.0-47-amd64 (ABI 47, generic)
KERNEL_PACKAGE_RE = re.compile(r"^linux-image-\d+\.\d+\.\d+-\d+-(cloud-amd64|amd64|rt-amd64)$")

_apt_updated: list[bool] = []  # non-empty once apt-get update ran in this process


@dataclass(frozen=True)
class DebRef:
    """A package version apt can fetch; ``filename`` is the pool file's base name."""

    name: str
    version: str
    filename: str


def _run(argv: list[str], cwd: Path | None = None) -> str:
    if shutil.which(argv[0]) is None:
        raise Unavailable(f"unavailable: {argv[0]} not found (the lab needs apt and dpkg)")
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _apt_update_once() -> None:
    if _apt_updated:
        return
    _apt_updated.append(True)
    _run(["apt-get", "update", "-qq"])


def _show(name: str) -> DebRef | None:
    try:
        out = _run(["apt-cache", "show", "--no-all-versions", name])
    except LabError:
        return None
    fields = dict(re.findall(r"^(Package|Version|Filename): (.+)$", out, re.M))
    if not {"Package", "Version", "Filename"} <= fields.keys():
        return None
    return DebRef(fields["Package"], fields["Version"], Path(fields["Filename"]).name)


def is_kernel(kernel: str) -> bool:
    """True for a flavour of :data:`FLAVOURS` or a versioned package of one (:data:`KERNEL_PACKAGE_RE`)."""
    return kernel in FLAVOURS or KERNEL_PACKAGE_RE.match(kernel) is not None


def _kernel_name(flavour: str = FLAVOUR) -> str | None:
    """The versioned package apt's ``linux-image-<flavour>`` depends on; a versioned package as is."""
    if KERNEL_PACKAGE_RE.match(flavour):
        return flavour
    try:
        out = _run(["apt-cache", "depends", f"linux-image-{flavour}"])
    except LabError:
        return None
    found = re.findall(rf"^\s*Depends:\s*(linux-image-\d\S*-{re.escape(flavour)})\s*$", out, re.M)
    return found[0] if found else None


def resolve(flavour: str = FLAVOUR) -> tuple[DebRef, DebRef]:
    """The versioned kernel package of ``flavour`` (or ``flavour`` itself when it is a versioned
    package, see :func:`is_kernel`) and busybox-static, as apt's candidates."""
    for attempt in range(2):
        kernel = _kernel_name(flavour)
        kref = _show(kernel) if kernel else None
        bref = _show(BUSYBOX)
        if kref and bref:
            return kref, bref
        if attempt == 0:
            try:
                _apt_update_once()
            except LabError as e:
                raise Unavailable(f"unavailable: apt cannot resolve linux-image-{flavour}: {e}") from e
    raise Unavailable(f"unavailable: apt cannot resolve linux-image-{flavour} and {BUSYBOX}")


def download(ref: DebRef, debs_dir: Path) -> Path:
    """The ``.deb`` for ``ref`` in ``debs_dir``, downloaded with apt-get if not there yet."""
    dest = debs_dir / ref.filename
    if dest.exists():
        return dest
    debs_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=debs_dir) as tmp:
        try:
            _run(["apt-get", "download", "-qq", f"{ref.name}={ref.version}"], cwd=Path(tmp))
        except LabError as e:
            raise Unavailable(f"unavailable: cannot download {ref.name}: {e}") from e
        got = list(Path(tmp).glob(f"{ref.name}_*.deb"))
        if len(got) != 1:
            raise LabError(f"apt-get download {ref.name}: expected one .deb, got {got}")
        got[0].replace(dest)
    return dest


def extract_member(deb: Path, pattern: str, dest: Path) -> str:
    """Copy the first member matching ``pattern`` (e.g. ``./boot/vmlinuz-*``) to ``dest``.

    Returns the member's name. Streams ``dpkg-deb --fsys-tarfile`` so only that member is written.
    """
    if shutil.which("dpkg-deb") is None:
        raise Unavailable("unavailable: dpkg-deb not found (install dpkg)")
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    if member.isfile() and fnmatch.fnmatch(member.name, pattern):
                        src = tar.extractfile(member)
                        assert src is not None
                        with dest.open("wb") as out:
                            shutil.copyfileobj(src, out)
                        return member.name
        finally:
            proc.kill()
    raise LabError(f"{deb.name}: no member matches {pattern}")


def read_members(deb: Path, patterns: tuple[str, ...], max_size: int = 16 << 20) -> dict[str, tuple[str, bytes]]:
    """The first member matching each of ``patterns``, as ``{pattern: (member name, bytes)}``.

    One pass over ``dpkg-deb --fsys-tarfile``; a pattern that nothing matches is a :class:`LabError`,
    and so is a member larger than ``max_size`` (these are small files: kernel modules).
    """
    if shutil.which("dpkg-deb") is None:
        raise Unavailable("unavailable: dpkg-deb not found (install dpkg)")
    found: dict[str, tuple[str, bytes]] = {}
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    for pattern in patterns:
                        if pattern not in found and fnmatch.fnmatch(member.name, pattern):
                            if member.size > max_size:
                                raise LabError(f"{deb.name}: {member.name} is {member.size} bytes (> {max_size})")
                            src = tar.extractfile(member)
                            assert src is not None
                            found[pattern] = (member.name, src.read())
                            break
                    if len(found) == len(patterns):
                        return found
        finally:
            proc.kill()
    missing = [p for p in patterns if p not in found]
    raise LabError(f"{deb.name}: no member matches {', '.join(missing)}")


def show_version(name: str, version: str | None) -> DebRef:
    """``name`` at ``version`` (apt's candidate when ``None``), as apt knows it; updates apt's lists once if needed."""
    spec = name if version is None else f"{name}={version}"
    for attempt in range(2):
        ref = _show(spec)
        if ref is not None:
            return ref
        if attempt == 0:
            try:
                _apt_update_once()
            except LabError as e:
                raise Unavailable(f"unavailable: apt cannot resolve {spec}: {e}") from e
    raise Unavailable(f"unavailable: apt does not know {spec}")


def field(deb: Path, name: str) -> str:
    """One control field of ``deb`` (``Depends``...), empty when absent."""
    return _run(["dpkg-deb", "-f", str(deb), name]).strip()


def unpack(deb: Path, root: Path) -> None:
    """Unpack every file of ``deb`` under ``root`` (``dpkg-deb -x``; nothing is installed)."""
    root.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(root)])
