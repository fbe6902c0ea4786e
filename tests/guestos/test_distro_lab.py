"""The Debian distribution guest (systemd, 2 vCPUs, pti=on, KASLR): every walker checked against
Volatility 3 run with the ISF we emit, and against the guest's own /proc.

One guest per session (``distro_dumped``): systemd as PID 1 with journald, udevd, dbus, cron and
sshd, the kernel's modules loaded by udev, a python3 marker (150 threads: a VMA tree of several
levels) and a bash clean process. Volatility reads the ELF dump QEMU wrote; we read the raw one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scanner.acquisition.memory.raw import RawMemory
from scanner.engine import Engine, EngineSettings
from scanner.guestos.linux.detect import Detection, open_linux
from scanner.guestos.linux.isf import write_isf
from scanner.guestos.linux.kallsyms import read_kallsyms
from scanner.guestos.linux.kaslr import DEFAULT_TEXT
from scanner.guestos.linux.modules import modules
from scanner.lab import eicar
from scanner.rulesets import LoadedRuleset, compile_path
from scanner.targets.awareness import memory_view
from scanner.verdicts import Verdict, VerdictKind

from .conftest import Dumped

pytestmark = pytest.mark.lab
CANONICAL = (1 << 48) - 1  # Volatility prints module addresses without the sign-extension bits


@dataclass(frozen=True)
class Oracle:
    detection: Detection
    pslist: list[dict[str, Any]]
    maps: list[dict[str, Any]]
    lsmod: list[dict[str, Any]]


def _vol(common: list[str], plugin: str) -> list[dict[str, Any]]:
    vol = shutil.which("vol", path=os.path.dirname(sys.executable))
    assert vol is not None, "volatility3 is a dev dependency (pip install -e '.[dev]')"
    proc = subprocess.run([vol, "-q", "-r", "json", *common, plugin], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def oracle(distro_dumped: Dumped, tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    work = tmp_path_factory.mktemp("distro-vol")
    detection = open_linux(RawMemory(str(distro_dumped.raw)), profile_cache=work / "profiles")
    assert detection.kernel is not None and detection.profile is not None, detection.reason
    write_isf(detection.profile, detection.kernel, work / "symbols")
    (work / "cache").mkdir()
    common = ["-s", str(work / "symbols"), "--cache-path", str(work / "cache"), "-f", str(distro_dumped.elf)]
    plugins = ("linux.pslist.PsList", "linux.proc.Maps", "linux.lsmod.Lsmod")
    return Oracle(detection, *(_vol(common, p) for p in plugins))


def test_the_guest_runs_a_distribution_userland(distro_dumped: Dumped, oracle: Oracle) -> None:
    kernel = oracle.detection.kernel
    assert kernel is not None and kernel.anchor.text != DEFAULT_TEXT  # KASLR on
    procs = {p.pid: p for p in kernel.processes().processes}
    assert procs[1].name == "systemd" and procs[1].exe == "/usr/lib/systemd/systemd"
    names = {p.name for p in procs.values()}
    assert {"systemd-journal", "systemd-udevd", "dbus-daemon", "cron", "sshd"} <= names
    marker, clean = procs[distro_dumped.guest.marker_pids[0]], procs[distro_dumped.guest.clean_pid]
    assert marker.exe.startswith("/usr/bin/python3") and marker.cmdline.startswith("/usr/bin/python3 ")
    assert clean.exe == "/usr/bin/bash"


def test_processes_equal_volatility_pslist(oracle: Oracle) -> None:
    kernel = oracle.detection.kernel
    assert kernel is not None
    listing = kernel.processes()
    assert listing.problems == ()
    # Volatility hides tasks past exit_task_namespaces (no nsproxy); the guest's last unit is one
    ours = {(p.pid, p.ppid, p.uid, p.name) for p in listing.processes if p.pid and not p.exiting}
    theirs = {(r["PID"], r["PPID"], r["UID"], r["COMM"]) for r in oracle.pslist}
    assert ours == theirs and len(ours) > 50


def test_processes_agree_with_the_guest(distro_dumped: Dumped, oracle: Oracle) -> None:
    kernel = oracle.detection.kernel
    assert kernel is not None
    ours = {p.pid: p for p in kernel.processes().processes}
    still = [g for g in distro_dumped.processes if g.pid in ours]  # udev workers come and go
    assert len(still) > 50
    for g in still:
        p = ours[g.pid]
        assert _execd(g.comm).startswith(_execd(p.name)) and (p.ppid, p.uid) == (g.ppid, g.uid), (g, p)
    assert sum(g.comm.startswith("(") for g in still) <= 3  # only a few can be caught mid-exec


def _execd(comm: str) -> str:
    """The name a process has once it has exec'd: systemd titles a unit's
    forked child ``(agetty)`` until its exec, and the guest's listing comes before the dump."""
    return comm[1:-1] if comm.startswith("(") and comm.endswith(")") else comm


def test_every_vma_of_every_process_equals_volatility_maps(oracle: Oracle) -> None:
    kernel = oracle.detection.kernel
    assert kernel is not None
    ours = set()
    for proc in kernel.processes().processes:
        vmas, problems = kernel.vmas(proc)
        assert problems == [], proc
        ours |= {(proc.pid, v.start, v.end, v.perms[:3], v.offset, _name(v.path)) for v in vmas}
    theirs = {(r["PID"], r["Start"], r["End"], r["Flags"], r["PgOff"], _name(r["File Path"])) for r in oracle.maps}
    assert ours == theirs
    assert len(theirs) > 1000


def _name(path: str) -> str:
    """Anonymous regions compare equal whatever their label: for [heap] the kernel's /proc rule
    (the region meets [start_brk, brk]) and Volatility's (it holds all of it) differ when the brk
    area spans two regions; the guest's own /proc/<pid>/maps checks our labels (next test)."""
    return "" if path in ("", "[heap]", "Anonymous Mapping") else path


def test_the_markers_tree_has_several_levels_and_matches_the_guests_proc_maps(
    distro_dumped: Dumped, oracle: Oracle
) -> None:
    kernel = oracle.detection.kernel
    assert kernel is not None
    marker = next(p for p in kernel.processes().processes if p.pid == distro_dumped.guest.marker_pids[0])
    root = kernel.kmem.u64(marker.mm + kernel.layout["mm.mm_mt"] + kernel.layout["mt.ma_root"])
    assert (root >> 3) & 0xF >= 2  # the root is an inner node: the tree has two levels or more
    vmas, problems = kernel.vmas(marker)
    guest = next(g for g in distro_dumped.processes if g.pid == marker.pid).maps
    assert problems == [] and len(guest) > 300
    assert [(v.start, v.end, v.perms, v.offset) for v in vmas] == [(m.start, m.end, m.perms, m.offset) for m in guest]
    assert [v.path for v in vmas if v.path] == [m.path for m in guest if m.path and m.path != "[vvar]"]


def test_modules_equal_volatility_lsmod_and_proc_modules(distro_dumped: Dumped, oracle: Oracle) -> None:
    kernel = oracle.detection.kernel
    assert kernel is not None
    loaded, problems = modules(kernel)
    assert problems == [] and len(loaded) >= 10
    ours = {(m.name, m.address & CANONICAL, m.size) for m in loaded}
    assert ours == {(r["Module Name"], r["Offset"], r["Code Size"]) for r in oracle.lsmod}
    assert {(m.name, m.base) for m in loaded} == {(g.name, g.address) for g in distro_dumped.modules}


def _scan(path: Path, mode: str, rules: LoadedRuleset, cache: Path) -> Verdict:
    engine = Engine(EngineSettings(threads=2, chunk_size=1 << 20, overlap=4096))
    try:
        with memory_view(RawMemory(str(path)), {"os": mode}, cache) as target:
            return engine.scan(rules, target)
    finally:
        engine.close()


@pytest.mark.parametrize("mode", ["auto", "processes"])
def test_the_marker_process_is_named_from_ram_alone(
    distro_dumped: Dumped, rules: LoadedRuleset, tmp_path: Path, mode: str
) -> None:
    verdict = _scan(distro_dumped.raw, mode, rules, tmp_path)
    assert verdict.kind is VerdictKind.MALICIOUS
    hits = [f for f in verdict.findings if f.rule == "EICAR_Test_File"]
    marker = distro_dumped.guest.marker_pids[0]
    heap = next(m for m in next(g for g in distro_dumped.processes if g.pid == marker).maps if m.path == "[heap]")
    assert hits
    raw = distro_dumped.raw.read_bytes()
    for f in hits:
        assert f.context["pid"] == str(marker) and f.context["process"] == "avscan-marker", f.context
        assert "attribution" not in f.context
        head = next(s for s in f.strings if s.identifier == "$head")
        assert head.physical is not None and raw[head.physical : head.physical + len(eicar())] == eicar()
    in_heap = [f for f in hits if f.context["region"] == f"{heap.start:#x}-{heap.end:#x} rw-p [heap]"]
    assert in_heap, [dict(f.context) for f in hits]
    for f in in_heap:
        virtual = int(f.context["virtual_address"], 16) if mode == "auto" else f.address
        assert heap.start <= virtual < heap.end
    assert verdict.coverage.accounting["processes.failed"] == 0


@pytest.mark.parametrize("mode", ["auto", "processes"])
def test_kernel_side_findings_name_their_module(
    distro_dumped: Dumped, oracle: Oracle, tmp_path: Path, mode: str
) -> None:
    # 64 bytes of serio_raw's relocated code, where the guest's /proc/modules says the module is
    kernel = oracle.detection.kernel
    assert kernel is not None
    module = next(m for m in distro_dumped.modules if m.name == "serio_raw")
    code = kernel.kmem.read(module.address + 0x10, 64)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "module.yar").write_text(
        f"rule InSerioRaw {{ strings: $a = {{ {code.hex(' ')} }} condition: $a }}"
    )
    verdict = _scan(distro_dumped.raw, mode, compile_path(tmp_path / "rules"), tmp_path / "profiles")
    named = [f for f in verdict.findings if f.context.get("kernel_region", "").startswith("module serio_raw")]
    assert named, [dict(f.context) for f in verdict.findings]
    for f in named:
        assert "pid" not in f.context or f.context["pid"] == ""
        virtual = int(f.context["virtual_address"], 16) if mode == "auto" else f.address
        assert module.address <= virtual < module.address + module.size
        assert f.context["kernel_region"] == f"module serio_raw (+{virtual - module.address:#x})"


def test_kallsyms_from_memory_agree_with_the_btf_derived_anchor(oracle: Oracle) -> None:
    # two sources of symbols: the kernel's own kallsyms tables, and what KASLR detection derived
    # from BTF and memory patterns (init_task, _text); they must agree
    kernel = oracle.detection.kernel
    assert kernel is not None
    symbols = read_kallsyms(kernel.kmem, kernel.anchor.text)
    assert len(symbols) > 50_000
    assert symbols.addresses["_text"] == kernel.anchor.text
    assert symbols.addresses["init_task"] == kernel.anchor.init_task and symbols.types["init_task"] in "dD"
    banner = kernel.kmem.cstring(symbols.addresses["linux_banner"], 512).decode()
    # the same release; the running kernel's linux_banner says "#1 SMP" where the first banner
    # found in memory (the profile's key) reads "# SMP"
    assert banner.startswith("Linux version ") and banner.split()[2] == oracle.detection.banner.split()[2]
