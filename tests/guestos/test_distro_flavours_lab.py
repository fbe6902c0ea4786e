"""The distribution guest's userland under other Debian 6.1 kernels: flavours and ABIs move struct
layouts, so processes and every VMA are compared with Volatility 3 again on each.

By default the current ``rt-amd64`` kernel (PREEMPT_RT: the task_struct differs most from cloud);
``AVSCAN_DISTRO_KERNELS`` (comma-separated package names, e.g.
``linux-image-6.1.0-56-amd64,linux-image-6.1.0-55-cloud-amd64``) checks others. The userland
keeps its own kernel's modules, so these kernels run with none loaded. kallsyms parsed from memory
must agree with the BTF-derived anchor on each.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scanner.acquisition.memory.raw import RawMemory
from scanner.errors import Unavailable
from scanner.guestos.linux.detect import open_linux
from scanner.guestos.linux.isf import write_isf
from scanner.guestos.linux.kallsyms import read_kallsyms
from scanner.lab import debs
from scanner.lab.distro import DistroGuest
from scanner.lab.pytest_plugin import lab_unavailable

from .test_distro_lab import _name, _vol

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def kernels() -> list[str]:
    listed = os.environ.get("AVSCAN_DISTRO_KERNELS", "")
    if listed:
        return [k.strip() for k in listed.split(",") if k.strip()]
    return ["rt-amd64"]  # a flavour: resolved to apt's current versioned package at run time


@pytest.mark.parametrize("kernel", kernels())
def test_processes_and_vmas_equal_volatility(kernel: str, tmp_path: Path) -> None:
    package = kernel if kernel.startswith("linux-image-") else debs._kernel_name(kernel)
    if package is None:
        lab_unavailable(f"apt knows no linux-image-{kernel}")
    try:
        guest = DistroGuest.boot(kernel_package=package)
    except Unavailable as e:
        lab_unavailable(e.message)
        raise
    with guest:
        guest.pause()
        guest.dump_raw(tmp_path / "guest.raw")
        guest.dump_elf(tmp_path / "guest.elf")
        marker = guest.marker_pids[0]
    detection = open_linux(RawMemory(str(tmp_path / "guest.raw")))
    assert detection.kernel is not None and detection.profile is not None, detection.reason
    assert package is not None and package.removeprefix("linux-image-") in detection.banner
    kernel_view = detection.kernel
    write_isf(detection.profile, kernel_view, tmp_path / "symbols")
    (tmp_path / "cache").mkdir()
    common = [
        "-s",
        str(tmp_path / "symbols"),
        "--cache-path",
        str(tmp_path / "cache"),
        "-f",
        str(tmp_path / "guest.elf"),
    ]
    listing = kernel_view.processes()
    assert listing.problems == ()
    ours = {(p.pid, p.ppid, p.uid, p.name) for p in listing.processes if p.pid and not p.exiting}
    assert ours == {(r["PID"], r["PPID"], r["UID"], r["COMM"]) for r in _vol(common, "linux.pslist.PsList")}
    vmas = set()
    for proc in listing.processes:
        found, problems = kernel_view.vmas(proc)
        assert problems == [], proc
        vmas |= {(proc.pid, v.start, v.end, v.perms[:3], v.offset, _name(v.path)) for v in found}
    maps = _vol(common, "linux.proc.Maps")
    assert vmas == {(r["PID"], r["Start"], r["End"], r["Flags"], r["PgOff"], _name(r["File Path"])) for r in maps}
    assert sum(1 for v in vmas if v[0] == marker) > 300
    symbols = read_kallsyms(kernel_view.kmem, kernel_view.anchor.text)  # the second symbol source
    assert symbols.addresses["_text"] == kernel_view.anchor.text
    assert symbols.addresses["init_task"] == kernel_view.anchor.init_task
    for dump in ("guest.raw", "guest.elf"):  # 2 GiB: not left to pytest's retention of tmp dirs
        (tmp_path / dump).unlink()
