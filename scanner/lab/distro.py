"""The lab's Debian distribution guest: a real bookworm userland with systemd as PID 1.

Beside the fast busybox guest (:mod:`scanner.lab.image`), this one looks like a server: systemd
with journald, udevd, dbus, cron and sshd, the kernel's own modules loaded by udev, a python3
marker process (many threads: a VMA tree with several levels) holding a benign EICAR test string
in its heap and a bash clean process. 2 vCPUs, 1 GiB, ``pti=on``, KASLR on, no NIC.

Build: ``mmdebstrap`` with the host's own apt sources file as the mirror (so the packages come
from where ``.ci/setup`` gets its own), the lab's cloud kernel package unpacked into it and
``depmod`` run inside; the tarball becomes an uncompressed newc initramfs (the root filesystem
stays in RAM: the cloud kernel has virtio-blk only as a module, and an initramfs needs no
switch-root). The image is cached in ``<cache>/distro/<key>/`` where ``key`` hashes every input
(suite, package list, kernel package, apt sources, guest files, :data:`FORMAT`), built once
under the lab's build lock.

The guest prints the busybox guest's console lines (:mod:`scanner.lab.console`), so
:class:`DistroGuest` is a :class:`~scanner.lab.guest.LabGuest` with another image and command line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from scanner.errors import Unavailable
from scanner.lab import accel as accel_mod
from scanner.lab import debs, newc
from scanner.lab.errors import LabError
from scanner.lab.guest import LabGuest, _check_host, _live
from scanner.lab.image import LabImage, _locked, cache_dir, guest_script, load_image

FORMAT = "avscan-lab-distro-1"
SUITE = "bookworm"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
PACKAGES = ("systemd-sysv", "udev", "kmod", "dbus", "cron", "openssh-server", "python3")
MEMORY_MIB, CPUS, MARKER_THREADS = 1024, 2, 150
EXCLUDE = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
GUEST_FILES = {  # guest script -> path in the image
    "distro-marker": "usr/local/bin/avscan-marker",
    "distro-clean": "usr/local/bin/avscan-clean",
    "distro-ready": "usr/local/bin/avscan-ready",
}
_UNITS = {
    "avscan-marker.service": "[Unit]\nDescription=avscan lab marker (python3)\n[Service]\n"
    f"ExecStart=/usr/local/bin/avscan-marker distro 0 {MARKER_THREADS}\n",
    "avscan-clean.service": "[Unit]\nDescription=avscan lab clean process (bash)\n[Service]\n"
    "ExecStart=/usr/local/bin/avscan-clean distro\n",
    "avscan-ready.service": "[Unit]\nDescription=avscan lab readiness report\n"
    "After=multi-user.target avscan-marker.service avscan-clean.service\n"
    "[Service]\nType=oneshot\nExecStart=/usr/local/bin/avscan-ready\n",
}
BOOT_TIMEOUT = 600.0  # systemd under TCG on a shared, busy host


def _key(kernel: debs.DebRef) -> str:
    h = hashlib.sha256(f"{FORMAT}\0{SUITE}\0{','.join(PACKAGES)}\0{','.join(EXCLUDE)}\0{kernel.filename}".encode())
    h.update(b"\0sources\0" + SOURCES.read_bytes())
    for name in sorted(GUEST_FILES):
        h.update(b"\0" + name.encode() + b"\0" + guest_script(name))
    for name, text in sorted(_UNITS.items()):
        h.update(b"\0" + name.encode() + b"\0" + text.encode())
    return h.hexdigest()[:16]


def _mmdebstrap(kernel_deb: Path, version: str, out: Path) -> None:
    """The rootfs tarball: Debian packages, the kernel package's modules, depmod run inside."""
    if shutil.which("mmdebstrap") is None:
        raise Unavailable("unavailable: mmdebstrap not found (apt-get install mmdebstrap)")
    if not SOURCES.is_file():
        raise Unavailable(f"unavailable: {SOURCES} (the host's apt sources) does not exist")
    argv = ["mmdebstrap", "--quiet", "--variant=apt", f"--include={','.join(PACKAGES)}"]
    argv += [f"--dpkgopt=path-exclude={p}" for p in EXCLUDE]
    argv += [
        # the modules only, into /usr/lib: /lib is a symlink that a plain dpkg-deb -x would replace
        f"--customize-hook=dpkg-deb --fsys-tarfile {kernel_deb}"
        ' | tar -C "$1" --keep-directory-symlink -x ./lib/modules',
        f'--customize-hook=chroot "$1" depmod {version}',
        SUITE,
        str(out),
        str(SOURCES),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
    if proc.returncode != 0:
        raise LabError(f"mmdebstrap failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def _entries(tarball: Path) -> list[newc.Entry]:
    """The tarball as newc entries (hard links as copies), plus the lab's scripts and units."""
    entries: list[newc.Entry] = []
    with tarfile.open(tarball) as tar:
        for member in tar:
            path = member.name.removeprefix("./").rstrip("/")
            if not path:
                continue
            perm = member.mode & 0o7777
            if member.isdir():
                entries.append(newc.directory(path, perm))
            elif member.issym():
                entries.append(newc.symlink(path, member.linkname))
            elif member.isfile() or member.islnk():
                src = tar.extractfile(member)
                assert src is not None
                entries.append(newc.regular(path, src.read(), perm))
            elif member.ischr():
                entries.append(newc.char_device(path, member.devmajor, member.devminor, perm))
    for name, path in GUEST_FILES.items():
        entries.append(newc.regular(path, guest_script(name), 0o755))
    wants = "etc/systemd/system/multi-user.target.wants"
    for unit, text in _UNITS.items():
        entries.append(newc.regular(f"etc/systemd/system/{unit}", text.encode()))
        entries.append(newc.symlink(f"{wants}/{unit}", f"/etc/systemd/system/{unit}"))
    entries.append(newc.symlink("etc/systemd/system/serial-getty@ttyS0.service", "/dev/null"))
    entries.append(newc.regular("etc/hostname", b"avscan-distro\n"))
    return entries


def _load_distro(directory: Path) -> LabImage:
    return load_image(directory, initramfs="rootfs.cpio", userland="userland")


def build_distro_image(cache: Path | None = None, flavour: str = debs.FLAVOUR) -> LabImage:
    """The distribution guest's image for the current inputs, built first if it is not cached."""
    cache = cache or cache_dir()
    kernel_ref, _ = debs.resolve(flavour)
    key = _key(kernel_ref)
    final = cache / "distro" / key
    with _locked(cache):
        if (final / "manifest.json").exists():
            return _load_distro(final)
        kernel_deb = debs.download(kernel_ref, cache / "debs")
        version = kernel_ref.name.removeprefix("linux-image-")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
        tmp.chmod(0o755)
        try:
            member = debs.extract_member(kernel_deb, "./boot/vmlinuz-*", tmp / "vmlinuz")
            _mmdebstrap(kernel_deb, version, tmp / "rootfs.tar")
            with (tmp / "rootfs.cpio").open("wb") as out:
                newc.write(out, _entries(tmp / "rootfs.tar"))
            (tmp / "rootfs.tar").unlink()
            manifest = {
                "format": FORMAT,
                "kernel_package": f"{kernel_ref.name}={kernel_ref.version}",
                "kernel_member": member,
                "userland": f"debian {SUITE}: {' '.join(PACKAGES)}",
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            tmp.replace(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _load_distro(final)


def with_kernel(image: LabImage, package: str, cache: Path | None = None) -> LabImage:
    """``image`` (its userland) booted with the kernel of Debian package ``package`` instead, e.g.
    ``linux-image-6.1.0-56-rt-amd64``: another flavour or ABI, for walkers checked on each.

    The userland keeps its own kernel's modules, so another kernel runs with none loaded. The
    kernel is extracted once into ``<cache>/distro/kernels/<package file>/``.
    """
    cache = cache or cache_dir()
    ref = debs._show(package)
    if ref is None:
        raise Unavailable(f"unavailable: apt does not know {package}")
    final = cache / "distro" / "kernels" / ref.filename.removesuffix(".deb")
    with _locked(cache):
        if not (final / "vmlinuz").exists():
            deb = debs.download(ref, cache / "debs")
            final.mkdir(parents=True, exist_ok=True)
            debs.extract_member(deb, "./boot/vmlinuz-*", final / "vmlinuz.tmp")
            (final / "vmlinuz.tmp").replace(final / "vmlinuz")
    return dataclasses.replace(
        image,
        key=f"{image.key}-{final.name}",
        kernel=final / "vmlinuz",
        kernel_package=f"{ref.name}={ref.version}",
    )


class DistroGuest(LabGuest):
    """A running distribution guest (see the module docstring). Use ``with DistroGuest.boot() as g:``."""

    @classmethod
    def boot(
        cls,
        *,
        variant: str = "distro",
        timeout: float = BOOT_TIMEOUT,
        cache: Path | None = None,
        kernel_package: str | None = None,
    ) -> DistroGuest:
        """Build the image if needed, boot it and wait for the guest's READY line on the console.

        ``kernel_package`` boots the same userland with another Debian kernel (:func:`with_kernel`).
        """
        _check_host()
        cache = cache or cache_dir()
        image = build_distro_image(cache)
        if kernel_package:
            image = with_kernel(image, kernel_package, cache)
        for accel in accel_mod.candidates(cache, image.key):
            guest = cls(image, MEMORY_MIB, 1, variant)
            _live.add(guest)
            try:
                guest._boot(accel, timeout if accel == "tcg" else 60.0)
            except TimeoutError:
                guest.stop()
                if accel == "kvm":
                    accel_mod.record_kvm(cache, image.key, boots=False)
                    continue
                raise LabError(f"distribution guest not READY after {timeout:.0f}s under {accel}") from None
            except BaseException:
                guest.stop()
                raise
            return guest
        raise LabError("no accelerator could boot the distribution guest")

    def command(self, accel: str, incoming: bool = False) -> list[str]:
        """The busybox guest's command line with 2 vCPUs, systemd as PID 1 and ``pti=on``."""
        argv = super().command(accel, incoming)
        argv[argv.index("-smp") + 1] = str(CPUS)
        argv[argv.index("-append") + 1] = (
            "console=ttyS0 panic=-1 pti=on rdinit=/lib/systemd/systemd quiet loglevel=3 "
            f"systemd.show_status=0 avscan.variant={self.variant}"
        )
        return [*argv, "-nic", "none"]
