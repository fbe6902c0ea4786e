"""The walkers on every Debian 6.1 kernel flavour and on more than one ABI: struct layouts move
between builds, so each is proven against Volatility 3 run with the ISF we emit.

For each kernel of :data:`MATRIX` the fast busybox lab guest boots with that kernel and loads two
of its modules. From the dump, our process list (pid, ppid, uid, name), every VMA of every process
(start, end, flags, offset, file) and the module list must equal Volatility's ``linux.pslist``,
``linux.proc.Maps`` and ``linux.lsmod`` (Volatility reads QEMU's ELF dump, we read the raw one),
and the default scan (physical scan + attribution) and the ``processes`` mode scan must find the
marker in its own process only. The
profile made from the package's kernel image (``--kernel``) must equal the one made from memory.

apt here offers ABIs 47 to 57 of each flavour (``apt-cache search linux-image-6.1``); the matrix
takes the newest build of each flavour (57) and an older ABI of each (generic 47, cloud and rt 52):
``mm_struct`` fields sit 8 bytes further on from one to the other, and rt's ``task_struct``,
``mm_struct`` and ``dentry`` differ from both other flavours'. ``python -m
scanner.lab.kernel_layouts`` finds 6 distinct walker layouts among the 33 builds apt offers (each
flavour at ABIs 47-54 and at 55-57): one row here for each. ``AVSCAN_KERNEL_MATRIX=all`` runs
every 6.1 build apt offers instead (about 33), or a comma-separated list of packages. The packages
are fetched and cached like the lab's own kernel (``scanner.lab.debs``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from scanner.acquisition.memory.raw import RawMemory
from scanner.engine import Engine, EngineSettings
from scanner.guestos.linux.detect import open_linux
from scanner.guestos.linux.isf import write_isf
from scanner.guestos.linux.kernel import LinuxKernel
from scanner.guestos.linux.modules import module_list
from scanner.guestos.linux.profile import Profile
from scanner.lab import debs
from scanner.lab.pytest_plugin import start_or_skip
from scanner.rulesets import LoadedRuleset
from scanner.targets.awareness import memory_view
from scanner.verdicts import VerdictKind

from .test_distro_lab import _name, _vol

pytestmark = [pytest.mark.lab, pytest.mark.slow]
MATRIX = (
    "linux-image-6.1.0-57-cloud-amd64",
    "linux-image-6.1.0-52-cloud-amd64",
    "linux-image-6.1.0-57-amd64",
    "linux-image-6.1.0-47-amd64",
    "linux-image-6.1.0-57-rt-amd64",
    "linux-image-6.1.0-52-rt-amd64",
)
CANONICAL = (1 << 48) - 1  # Volatility prints module addresses without the sign-extension bits


def _volatility(guest_elf: Path, kernel: LinuxKernel, profile: Profile, work: Path) -> dict[str, list[dict[str, Any]]]:
    write_isf(profile, kernel, work / "symbols")
    (work / "cache").mkdir()
    common = ["-s", str(work / "symbols"), "--cache-path", str(work / "cache"), "-f", str(guest_elf)]
    plugins = ("linux.pslist.PsList", "linux.proc.Maps", "linux.lsmod.Lsmod")
    return {p: _vol(common, p) for p in plugins}


def _scans(raw: Path, rules: LoadedRuleset, profiles: Path, markers: list[int]) -> None:
    """The default mode (physical scan, findings attributed) and ``processes`` mode (one unit per
    VMA) both find the marker in the marker process(es) only, with every process walked."""
    engine = Engine(EngineSettings(threads=2))
    try:
        for mode in ("auto", "processes"):
            with memory_view(RawMemory(str(raw)), {"os": mode}, profiles) as target:
                verdict = engine.scan(rules, target)
            assert verdict.kind is VerdictKind.MALICIOUS, mode
            hits = [f for f in verdict.findings if f.rule == "EICAR_Test_File"]
            assert {int(f.context["pid"]) for f in hits} == set(markers), (mode, [f.context for f in hits])
            assert all(f.context["process"] == "avscan-marker" and "[heap]" in f.context["region"] for f in hits)
            assert verdict.coverage.accounting.get("processes.failed", 0) == 0, mode
            assert not verdict.coverage.gaps, (mode, verdict.coverage.gaps)
    finally:
        engine.close()


def _matrix() -> tuple[str, ...]:
    chosen = os.environ.get("AVSCAN_KERNEL_MATRIX", "")
    if chosen == "all":
        argv = ["apt-cache", "pkgnames", "linux-image-6.1.0-"]
        listed = subprocess.run(argv, capture_output=True, text=True, check=False).stdout.split()
        return tuple(sorted(p for p in listed if debs.KERNEL_PACKAGE_RE.match(p)))
    return tuple(p.strip() for p in chosen.split(",") if p.strip()) or MATRIX


@pytest.mark.parametrize("package", _matrix())
def test_walkers_equal_volatility_on_each_kernel(package: str, rules: LoadedRuleset, tmp_path: Path) -> None:
    with start_or_skip(memory_mib=256, markers=1, variant="matrix", flavour=package, load_modules=True) as guest:
        assert guest.image.kernel_package.startswith(f"{package}=")
        guest.pause()
        guest.dump_raw(tmp_path / "guest.raw")
        guest.dump_elf(tmp_path / "guest.elf")
        printed, markers, vmlinuz = guest.modules(), guest.marker_pids, guest.image.kernel
    detection = open_linux(RawMemory(str(tmp_path / "guest.raw")))
    kernel, profile = detection.kernel, detection.profile
    assert kernel is not None and profile is not None, detection.reason
    assert package.removeprefix("linux-image-") in detection.banner
    # --kernel with the package's own vmlinuz (generic and rt ones are xz, cloud ones LZ4) gives
    # the profile that memory gives
    from_image = open_linux(RawMemory(str(tmp_path / "guest.raw")), kernel_image=vmlinuz)
    assert from_image.profile is not None and from_image.profile.origin == "kernel image", from_image.reason
    assert from_image.profile.btf_blob == profile.btf_blob and from_image.profile.layout == profile.layout
    vol = _volatility(tmp_path / "guest.elf", kernel, profile, tmp_path)

    listing = kernel.processes()
    assert listing.problems == ()
    ours = {(p.pid, p.ppid, p.uid, p.name) for p in listing.processes if p.pid and not p.exiting}
    assert ours == {(r["PID"], r["PPID"], r["UID"], r["COMM"]) for r in vol["linux.pslist.PsList"]}
    assert {"init", "avscan-marker", "avscan-clean"} <= {name for *_, name in ours}

    vmas = set()
    for proc in listing.processes:
        found, problems = kernel.vmas(proc)
        assert problems == [], proc
        vmas |= {(proc.pid, v.start, v.end, v.perms[:3], v.offset, _name(v.path)) for v in found}
    maps = vol["linux.proc.Maps"]
    assert vmas == {(r["PID"], r["Start"], r["End"], r["Flags"], r["PgOff"], _name(r["File Path"])) for r in maps}
    assert sum(1 for v in vmas if v[0] == markers[0] and v[5] == "/bin/busybox") >= 2

    found_modules = module_list(kernel)
    assert found_modules.problems == ()
    theirs = [(int(r["Offset"]), r["Module Name"], int(r["Code Size"])) for r in vol["linux.lsmod.Lsmod"]]
    assert theirs == [(m.address & CANONICAL, m.name, m.size) for m in found_modules.modules]
    assert [(m.name, m.size, m.base) for m in found_modules.modules] == [(g.name, g.size, g.address) for g in printed]
    assert {m.name for m in found_modules.modules} == {"dummy", "crc_itu_t"}

    (tmp_path / "guest.elf").unlink()
    _scans(tmp_path / "guest.raw", rules, tmp_path / "profiles", markers)
