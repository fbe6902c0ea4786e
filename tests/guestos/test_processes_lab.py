"""Process-aware scanning of a real lab guest (Debian cloud kernel, KASLR on), from its memory alone.

The guest's own view (what init printed from /proc) is the reference for processes and regions;
Volatility 3 run with the ISF we emit is the independent cross-check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scanner.acquisition.memory.raw import RawMemory
from scanner.engine import Engine, EngineSettings
from scanner.guestos.linux.detect import open_linux
from scanner.guestos.linux.isf import write_isf
from scanner.guestos.linux.kaslr import DEFAULT_TEXT
from scanner.guestos.linux.reverse import owners_of
from scanner.lab import eicar
from scanner.rulesets import LoadedRuleset
from scanner.targets.memory import MemoryTarget
from scanner.targets.processes import process_target
from scanner.verdicts import Verdict, VerdictKind

from .conftest import Dumped

pytestmark = pytest.mark.lab
SETTINGS = EngineSettings(threads=2, chunk_size=1 << 20, overlap=4096)


def scan(target: object, rules: LoadedRuleset) -> Verdict:
    engine = Engine(SETTINGS)
    try:
        return engine.scan(rules, target)  # type: ignore[arg-type]
    finally:
        engine.close()


@pytest.fixture(scope="module")
def verdict(dumped: Dumped, rules: LoadedRuleset, tmp_path_factory: pytest.TempPathFactory) -> Verdict:
    cache = tmp_path_factory.mktemp("profiles")
    return scan(process_target(RawMemory(str(dumped.raw)), profile_cache=cache), rules)


def test_findings_name_the_marker_processes_with_virtual_and_physical_addresses(
    dumped: Dumped, verdict: Verdict
) -> None:
    assert verdict.kind is VerdictKind.MALICIOUS
    assert verdict.details["os"] == "linux" and verdict.details["mode"] == "processes"
    assert int(verdict.details["os.kernel_base"], 16) != DEFAULT_TEXT  # KASLR is on in the lab
    hits = [f for f in verdict.findings if f.rule == "EICAR_Test_File"]
    assert sorted(int(f.context["pid"]) for f in hits) == dumped.guest.marker_pids
    maps = {p.pid: p.maps for p in dumped.processes}
    raw = dumped.raw.read_bytes()
    for f in hits:
        assert f.context["process"] == "avscan-marker"
        start, end = (int(x, 16) for x in f.context["region"].split()[0].split("-"))
        assert (start, end, "[heap]") in {(m.start, m.end, m.path) for m in maps[int(f.context["pid"])]}
        assert start <= f.address < end
        for s in f.strings:
            assert s.physical is not None and start <= s.address < end
            assert raw[s.physical : s.physical + len(s.data)] == s.data
        head = [s for s in f.strings if s.identifier == "$head"]
        assert head and raw[head[0].physical : head[0].physical + len(eicar())] == eicar()


def test_clean_process_and_kernel_have_no_finding(dumped: Dumped, verdict: Verdict) -> None:
    pids = {f.context.get("pid") for f in verdict.findings}
    assert str(dumped.guest.clean_pid) not in pids
    assert "" not in pids  # the kernel's aliases of process pages are not reported twice


def test_process_list_agrees_with_the_guest(dumped: Dumped) -> None:
    view = open_linux(RawMemory(str(dumped.raw))).kernel
    assert view is not None
    listing = view.processes()
    assert listing.problems == ()
    ours = {p.pid: p for p in listing.processes}
    for g in dumped.processes:
        p = ours[g.pid]
        assert g.comm.startswith(p.name), (g, p)  # kworker names carry their workqueue in /proc
        assert (p.ppid, p.uid) == (g.ppid, g.uid)
    marker = ours[dumped.guest.marker_pids[0]]
    assert marker.exe == "/bin/busybox" and marker.cmdline.startswith("/bin/sh /bin/avscan-marker")


def test_regions_agree_with_proc_maps(dumped: Dumped) -> None:
    view = open_linux(RawMemory(str(dumped.raw))).kernel
    assert view is not None
    ours = {p.pid: p for p in view.processes().processes}
    mapped = [g for g in dumped.processes if g.maps]  # init printed /proc/<pid>/maps of these
    assert {g.pid for g in mapped} == {*dumped.guest.marker_pids, dumped.guest.clean_pid}
    for g in mapped:
        vmas, problems = view.vmas(ours[g.pid])
        assert problems == []
        assert [(v.start, v.end, v.perms) for v in vmas] == [(m.start, m.end, m.perms) for m in g.maps]
        files = [(m.path, m.offset) for m in g.maps if m.path.startswith("/")]
        assert ("/bin/busybox", 0) in files  # every process here runs busybox: file paths are compared
        assert [(v.path, v.pgoff * 4096) for v, m in zip(vmas, g.maps, strict=True) if m.path.startswith("/")] == files
        assert [m.path for v, m in zip(vmas, g.maps, strict=True) if v.path] == [v.path for v in vmas if v.path]


def test_reverse_map_attributes_physical_hits_to_processes(dumped: Dumped, rules: LoadedRuleset) -> None:
    physical = scan(MemoryTarget(RawMemory(str(dumped.raw))), rules)
    heads = {s.address for f in physical.findings for s in f.strings if s.identifier == "$head"}
    view = open_linux(RawMemory(str(dumped.raw))).kernel
    assert view is not None
    owned = owners_of(view, heads)
    pids = {o.pid for found in owned.values() for o in found}
    assert pids == set(dumped.guest.marker_pids)
    assert all("[heap]" in o.region for found in owned.values() for o in found)


def test_profile_cache_is_used_the_second_time(dumped: Dumped, tmp_path: Path) -> None:
    first = open_linux(RawMemory(str(dumped.raw)), profile_cache=tmp_path)
    second = open_linux(RawMemory(str(dumped.raw)), profile_cache=tmp_path)
    assert first.profile is not None and first.profile.origin == "memory"
    assert second.profile is not None and second.profile.origin == "cache"
    assert second.kernel is not None


def test_memory_without_linux_falls_back_to_a_physical_scan(tmp_path: Path, rules: LoadedRuleset) -> None:
    image = tmp_path / "blank.raw"
    image.write_bytes(b"\0" * (1 << 20) + eicar() + b"\0" * 4096)
    verdict = scan(process_target(RawMemory(str(image))), rules)
    assert verdict.kind is VerdictKind.MALICIOUS
    assert verdict.details["mode"] == "physical"
    assert "no Linux banner" in verdict.details["os"]


def _vol(args: list[str]) -> list[dict[str, object]]:
    vol = shutil.which("vol", path=os.path.dirname(sys.executable))
    assert vol is not None, "volatility3 (a dev dependency) is not installed: run .ci/setup"
    proc = subprocess.run([vol, "-q", "-r", "json", *args], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_volatility3_with_our_isf_sees_the_same_processes_and_regions(dumped: Dumped, tmp_path: Path) -> None:
    detection = open_linux(RawMemory(str(dumped.raw)))
    assert detection.kernel is not None and detection.profile is not None
    write_isf(detection.profile, detection.kernel, tmp_path / "symbols")
    (tmp_path / "cache").mkdir()
    common = ["-s", str(tmp_path / "symbols"), "--cache-path", str(tmp_path / "cache"), "-f", str(dumped.elf)]
    rows = _vol([*common, "linux.pslist.PsList"])
    theirs = {(int(r["PID"]), str(r["COMM"])) for r in rows}  # type: ignore[call-overload]
    ours = {(p.pid, p.name) for p in detection.kernel.processes().processes if p.pid}
    assert theirs == ours
    marker = dumped.guest.marker_pids[0]
    regions = _vol([*common, "linux.proc.Maps", "--pid", str(marker)])
    proc = next(p for p in detection.kernel.processes().processes if p.pid == marker)
    vmas, _ = detection.kernel.vmas(proc)
    assert [(int(r["Start"]), int(r["End"])) for r in regions] == [(v.start, v.end) for v in vmas]  # type: ignore[call-overload]


def test_profile_from_the_kernel_image_matches_memory(dumped: Dumped) -> None:
    from scanner.guestos.linux.kernel_image import btf_from_image

    blob, banner = btf_from_image(dumped.guest.image.kernel)  # LZ4-legacy bzImage of the lab
    from_memory = open_linux(RawMemory(str(dumped.raw)))
    from_image = open_linux(RawMemory(str(dumped.raw)), kernel_image=dumped.guest.image.kernel)
    assert from_memory.profile is not None and from_image.profile is not None
    assert from_image.profile.origin == "kernel image" and banner == from_memory.banner
    assert " #1 SMP " in banner  # the banner the kernel runs under, not the unused weak "# SMP" one
    assert blob == from_memory.profile.btf_blob
    assert from_image.kernel is not None
    assert from_image.profile.layout == from_memory.profile.layout


def test_module_walk_of_a_guest_without_modules(dumped: Dumped, verdict: Verdict) -> None:
    # The lab's initramfs loads no module: nothing may be carved out of the (empty) modules area.
    assert verdict.details["os.modules"] == "none"
