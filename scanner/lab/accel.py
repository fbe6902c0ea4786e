"""Choose QEMU's accelerator: KVM when it exists and really boots the lab guest, else TCG.

``AVSCAN_LAB_ACCEL=kvm|tcg`` forces a choice. Some hosts (nested virtualisation, sandboxes)
expose a ``/dev/kvm`` that opens and answers ioctls but never runs the guest to completion; so
after a KVM boot times out the guest is retried under TCG and KVM is remembered as broken in
the cache directory (keyed by host kernel, QEMU binary and image), so later boots skip it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from scanner.errors import ConfigError

ENV = "AVSCAN_LAB_ACCEL"
_KVM_GET_API_VERSION = 0xAE00
_KVM_API_VERSION = 12


def kvm_usable() -> bool:
    """``/dev/kvm`` opens read-write and speaks the stable KVM API."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, _KVM_GET_API_VERSION) == _KVM_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)


def _probe_file(cache: Path, image_key: str) -> Path:
    qemu = shutil.which("qemu-system-x86_64") or ""
    mtime = Path(qemu).stat().st_mtime if qemu else 0
    stamp = f"{os.uname().release}\0{qemu}\0{mtime}\0{image_key}"
    return cache / "kvm-probe" / (hashlib.sha256(stamp.encode()).hexdigest()[:16] + ".json")


def candidates(cache: Path, image_key: str) -> list[str]:
    """Accelerators to try, in order."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("kvm", "tcg"):
        return [forced]
    if forced not in ("", "auto"):
        raise ConfigError(f"{ENV}={forced!r}: expected kvm, tcg or auto")
    if not kvm_usable():
        return ["tcg"]
    probe = _probe_file(cache, image_key)
    if probe.exists() and not json.loads(probe.read_text()).get("kvm_boots", True):
        return ["tcg"]
    return ["kvm", "tcg"]


def record_kvm(cache: Path, image_key: str, boots: bool) -> None:
    """Remember whether a KVM boot of this image reached READY on this host."""
    probe = _probe_file(cache, image_key)
    probe.parent.mkdir(parents=True, exist_ok=True)
    tmp = probe.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"kvm_boots": boots}) + "\n")
    tmp.replace(probe)
