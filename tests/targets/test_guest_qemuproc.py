"""Stock QEMU guests (plain ``-m``, memfd, RAM above 4 GiB) read from the QEMU process itself.

The oracle for every address is QEMU: ``pmemsave`` writes guest-physical memory to a file, and
QEMU's generic loader puts bytes at guest-physical addresses we choose.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.acquisition.live import QemuGuest
from scanner.acquisition.memory.qemuproc import PAGE, QemuProcessMemory
from scanner.acquisition.qmp import QmpClient
from scanner.engine import Engine, EngineSettings
from scanner.lab import eicar
from scanner.lab.pytest_plugin import lab_unavailable
from scanner.rulesets import compile_path
from scanner.targets import TargetSpec, build_target
from scanner.verdicts import VerdictKind

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
GIB = 1 << 30


@pytest.fixture(scope="module")
def rules():
    return compile_path(REPO / "signatures")


@pytest.fixture(scope="module")
def anon_guest():
    from scanner.lab.pytest_plugin import start_or_skip

    with start_or_skip(memory_mib=256, markers=2, variant="anon", ram="anonymous") as guest:
        yield guest


def scan(rules, params, threads=2):
    engine = Engine(EngineSettings(threads=threads))
    try:
        with build_target(TargetSpec("guest", params)) as target:
            return engine.scan(rules, target)
    finally:
        engine.close()


def heads(verdict) -> list[int]:
    return sorted(
        s.address for f in verdict.findings if f.rule == "EICAR_Test_File" for s in f.strings if s.identifier == "$head"
    )


def present_pages(pid: int, host: int, length: int) -> int:
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(host // PAGE * 8)
        raw = f.read(length // PAGE * 8)
    return sum(1 for b in raw[7::8] if b & 0x80)


def test_plain_m_guest_is_scanned_live_and_findings_sit_where_qemu_says(anon_guest, rules, tmp_path):
    assert not anon_guest.ram_path.exists()  # no RAM file: QEMU's own anonymous memory only
    verdict = scan(rules, {"qmp": str(anon_guest.scanner_qmp_path)})
    assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete
    assert verdict.details["memory.format"] == "qemu-process"
    addresses = heads(verdict)
    assert len(addresses) == anon_guest.markers
    anon_guest.dump_raw(tmp_path / "ram.raw")  # QEMU's pmemsave: the independent reader
    ram = (tmp_path / "ram.raw").read_bytes()
    for address in addresses:
        assert ram[address : address + len(eicar())] == eicar()
    marked = [f for f in verdict.findings if f.rule == "EICAR_Test_File"]
    assert {p for f in marked for p in f.context.get("process", "").split(",")} == {"avscan-marker"}
    assert {int(p) for f in marked for p in f.context.get("pid", "").split(",")} <= set(anon_guest.marker_pids)


def test_untouched_guest_pages_are_not_faulted_in(tmp_path, rules):
    """A guest that never ran has touched almost none of its RAM: the scan reads only what is there."""
    with stopped_qemu(tmp_path, "256M", [0x123_4000]) as qmp:
        with QemuGuest(str(qmp)) as guest:
            layout = guest.ram_layout()
        before = sum(present_pages(layout.pid, r.host, r.length) for r in layout.ranges)
        verdict = scan(rules, {"qmp": str(qmp), "os": "physical"})
        after = sum(present_pages(layout.pid, r.host, r.length) for r in layout.ranges)
    assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete
    assert heads(verdict) == [0x123_4000]
    assert before < layout.mapped // PAGE // 2  # the test means something: most pages never touched
    assert after == before, f"the scan faulted in {after - before} pages of guest RAM"


def test_paused_mode_holds_the_guest_only_while_its_ram_is_copied(anon_guest, rules):
    anon_guest.events()  # forget earlier events
    began = time.time()
    verdict = scan(rules, {"qmp": str(anon_guest.scanner_qmp_path), "consistency": "paused"})
    ended = time.time()
    events = [
        (e["event"], e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6) for e in anon_guest.events()
    ]
    assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete
    assert verdict.details["snapshot"].startswith("memfd") and verdict.details["pause_cut_short"] == "false"
    assert [name for name, _ in events] == ["STOP", "RESUME"]  # QEMU's own record of the pause
    (_, stopped), (_, resumed) = events
    assert began <= stopped < resumed <= ended
    assert resumed - stopped < (ended - began) / 2  # resumed long before the scan ended
    assert anon_guest.status() == "running"


def test_cli_scans_a_plain_m_guest_by_its_qmp_socket(anon_guest, tmp_path):
    result = avscan("scan", "--guest-qmp", str(anon_guest.scanner_qmp_path), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Verdict: MALICIOUS" in result.stdout
    assert "EICAR_Test_File FOUND" in result.stdout


def test_without_cap_sys_ptrace_the_scan_is_refused_in_one_line(anon_guest, tmp_path):
    if shutil.which("capsh") is None:
        pytest.fail("capsh missing (Debian libcap2-bin)")
    command = [sys.executable, "-m", "scanner", "--state-dir", str(tmp_path / "state")]
    command += ["scan", "--guest-qmp", str(anon_guest.scanner_qmp_path)]
    result = subprocess.run(
        ["capsh", "--drop=cap_sys_ptrace", "--", "-c", " ".join(command)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Verdict: ERROR" in result.stdout
    assert "CAP_SYS_PTRACE" in out and "Traceback" not in out
    assert anon_guest.status() == "running"


def test_guest_gone_after_open_is_incomplete_never_clean(tmp_path, rules):
    engine = Engine(EngineSettings(threads=2))
    try:
        with stopped_qemu(tmp_path, "256M", [0x123_4000]) as qmp:
            target = build_target(TargetSpec("guest", {"qmp": str(qmp), "os": "physical"}))
        with target:  # QEMU was killed after the target opened
            verdict = engine.scan(rules, target)
    finally:
        engine.close()
    assert verdict.kind in (VerdictKind.INCOMPLETE, VerdictKind.ERROR)
    assert not verdict.coverage.complete
    reasons = [g.detail for g in verdict.coverage.gaps]
    assert reasons and all("guest stopped" in r for r in reasons), reasons


@pytest.mark.parametrize("access", ["auto", "process"])  # through the memfd / through /proc/PID/mem
def test_memfd_guest_is_read_without_filling_its_holes(tmp_path, rules, access):
    with stopped_qemu(tmp_path, "256M", [0x123_4000], memfd=True) as qmp:
        with QemuGuest(str(qmp)) as qemu:
            layout = qemu.ram_layout()
        source = QemuProcessMemory(layout)
        try:
            fds = [b.fd for b in source._backings if b is not None]  # the memfd, through map_files
            assert len(fds) == len(layout.ranges) and len({os.fstat(fd).st_ino for fd in fds}) == 1
            fd = fds[0]
            before = os.fstat(fd).st_blocks
            verdict = scan(rules, {"qmp": str(qmp), "access": access, "os": "physical"})
            after = os.fstat(fd).st_blocks
        finally:
            source.close()
    assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete
    assert heads(verdict) == [0x123_4000]
    assert before * 512 < layout.mapped // 2  # the test means something: the memfd is mostly holes
    assert after == before, f"the scan allocated {(after - before) * 512} bytes of the guest's memfd"


@contextlib.contextmanager
def stopped_qemu(tmp_path: Path, memory: str, markers: list[int], memfd: bool = False) -> Iterator[Path]:
    """QEMU (q35, TCG, plain ``-m`` or a shared memfd, no NIC) stopped before its first
    instruction, QEMU's generic loader having put the EICAR string at each address of ``markers``."""
    if shutil.which("qemu-system-x86_64") is None:
        lab_unavailable("qemu-system-x86_64 missing")
    blob = tmp_path / "marker.bin"
    blob.write_bytes(eicar())
    qmp = tmp_path / "qmp.sock"
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-nodefaults", "-display", "none", "-S", "-accel", "tcg"]
        + (["-machine", "q35,memory-backend=mem"] if memfd else ["-machine", "q35"])
        + (["-object", f"memory-backend-memfd,id=mem,size={memory},share=on"] if memfd else [])
        + ["-m", memory, "-nic", "none", "-qmp", f"unix:{qmp},server=on,wait=off"]
        + [x for a in markers for x in ("-device", f"loader,file={blob},addr={a:#x},force-raw=on")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = QmpClient(qmp)
        client.connect(time.monotonic() + 30)
        client.close()
        yield qmp
    finally:
        qemu.kill()
        qemu.wait()


def test_ram_above_4_gib_keeps_its_guest_physical_addresses(tmp_path, rules):
    """A 3 GiB q35 guest: RAM splits at 2 GiB, the rest starts at 4 GiB (past the PCI hole).
    QEMU's generic loader puts a marker at addresses on both sides; the guest never runs."""
    low, high = 0x7FFF_F000 - 16, 0x1_2345_6000 + 123
    with stopped_qemu(tmp_path, "3G", [low, high]) as qmp:
        verdict = scan(rules, {"qmp": str(qmp), "os": "physical"})
        with QemuGuest(str(qmp)) as guest:
            starts = [(r.physical, r.length) for r in guest.ram_layout().ranges]
            saved = tmp_path / "high.raw"
            guest.execute("pmemsave", {"val": high, "size": len(eicar()), "filename": str(saved)})
    assert starts[-1] == (0x1_0000_0000, GIB)
    assert max(p + n for p, n in starts[:-1]) == 2 * GIB
    assert heads(verdict) == [low, high]
    assert saved.read_bytes() == eicar()
    assert verdict.coverage.accounting["qemu.ram_block_bytes"] == 3 * GIB  # QEMU's RAM block
    assert verdict.coverage.accounting["qemu.ram_mapped_bytes"] == 3 * GIB - (256 << 10)  # less ROM-shadowed
    assert verdict.coverage.complete


def avscan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanner", "--state-dir", str(cwd / "state"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
        check=False,
    )
