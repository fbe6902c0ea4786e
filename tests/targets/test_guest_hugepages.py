"""Guests whose RAM is on huge pages, read live from the QEMU process: a private file on a
hugetlbfs (``memory-backend-file,share=off``, what libvirt's ``<hugepages/>`` makes) and a memfd
of huge pages (``memory-backend-memfd,hugetlb=on``).

Huge pages are reserved for each test and a hugetlbfs is mounted in a temporary directory
(:mod:`tests.support.hugepages`), both undone afterwards. The oracle for every address is QEMU's
``pmemsave``; for "no huge page allocated by the scan" it is the kernel's pool count.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.acquisition.qmp import QmpClient
from scanner.engine import Engine, EngineSettings
from scanner.lab import eicar
from scanner.lab.pytest_plugin import start_or_skip
from scanner.rulesets import compile_path
from scanner.targets import TargetSpec, build_target
from scanner.verdicts import VerdictKind
from tests.support.hugepages import HUGE, MiB, hugetlbfs

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
MEMORY_MIB = 256
PAGES = MEMORY_MIB * MiB // HUGE + 8


@pytest.fixture(scope="module")
def rules():
    return compile_path(REPO / "signatures")


def scan(rules, params):
    engine = Engine(EngineSettings(threads=2))
    try:
        with build_target(TargetSpec("guest", params)) as target:
            return engine.scan(rules, target)
    finally:
        engine.close()


def heads(verdict) -> list[int]:
    return sorted(
        s.address for f in verdict.findings if f.rule == "EICAR_Test_File" for s in f.strings if s.identifier == "$head"
    )


def pmemsave(qmp: Path, address: int, length: int, out: Path) -> bytes:
    client = QmpClient(qmp)
    client.connect(time.monotonic() + 30)
    try:
        client.execute("pmemsave", {"val": address, "size": length, "filename": str(out)})
    finally:
        client.close()
    return out.read_bytes()


@pytest.mark.parametrize("ram", ["hugetlbfs", "memfd-hugetlb"])
def test_a_guest_on_huge_pages_is_scanned_live_by_its_qmp_socket(ram, tmp_path):
    with hugetlbfs(PAGES) as mnt:
        extra = {"hugetlbfs": mnt} if ram == "hugetlbfs" else {}
        with start_or_skip(memory_mib=MEMORY_MIB, markers=2, variant="huge", ram=ram, **extra) as guest:
            maps = Path(f"/proc/{guest._proc.pid}/maps").read_text()
            assert "/memfd:memory-backend-memfd" in maps if ram == "memfd-hugetlb" else str(mnt) in maps
            command = [sys.executable, "-m", "scanner", "--state-dir", str(tmp_path / "state"), "scan", "--json"]
            result = subprocess.run(
                [*command, "--guest-qmp", str(guest.scanner_qmp_path)],
                capture_output=True,
                text=True,
                cwd=REPO,
                timeout=300,
                check=False,
            )
            assert result.returncode == 1, result.stdout + result.stderr
            docs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
            found = [d["avscan"]["finding"] for d in docs if d.get("rule", {}).get("name") == "EICAR_Test_File"]
            addresses = sorted({s["address"] for f in found for s in f["strings"] if s["identifier"] == "$head"})
            assert len(addresses) == guest.markers, found
            for address in addresses:  # QEMU's own reader of guest-physical memory
                saved = pmemsave(guest.scanner_qmp_path, address, len(eicar()), tmp_path / f"{address:x}.raw")
                assert saved == eicar(), hex(address)
            assert {p for f in found for p in f["owners"]["process"].split(",")} == {"avscan-marker"}


@contextlib.contextmanager
def stopped_qemu(tmp_path: Path, backend: str, markers: tuple[int, ...] = ()) -> Iterator[tuple[Path, int]]:
    """QEMU (q35, TCG, no NIC) with RAM object ``backend`` (id ``mem``), stopped before its
    first instruction; QEMU's generic loader put EICAR at each address of ``markers``. Yields
    its QMP socket and pid."""
    blob = tmp_path / "marker.bin"
    blob.write_bytes(eicar())
    qmp = tmp_path / "qmp.sock"
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-nodefaults", "-display", "none", "-S", "-accel", "tcg"]
        + ["-machine", "q35,memory-backend=mem", "-object", backend, "-m", f"{MEMORY_MIB}M", "-nic", "none"]
        + ["-qmp", f"unix:{qmp},server=on,wait=off"]
        + [x for a in markers for x in ("-device", f"loader,file={blob},addr={a:#x},force-raw=on")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        client = QmpClient(qmp)
        try:
            client.connect(time.monotonic() + 30)
        except Exception:
            qemu.kill()
            raise AssertionError(qemu.communicate()[1].decode()) from None
        client.close()
        yield qmp, qemu.pid
    finally:
        qemu.kill()
        qemu.wait()


def test_a_private_guest_ram_over_a_template_file_is_read_from_the_file_not_taken_for_zeros(tmp_path, rules):
    """``memory-backend-file,share=off`` over a file holding data (a RAM template, as VM
    templating does): pages the guest never touched show the file's bytes, which the guest reads."""
    planted = 0x234_5000 + 99
    with hugetlbfs(2 * PAGES) as mnt:
        template = mnt / "template"
        with template.open("w+b") as f:
            f.truncate(MEMORY_MIB * MiB)
            with mmap.mmap(f.fileno(), MEMORY_MIB * MiB) as m:
                m[planted : planted + len(eicar())] = eicar()
        backend = f"memory-backend-file,id=mem,size={MEMORY_MIB}M,mem-path={template},share=off"
        with stopped_qemu(tmp_path, backend) as (qmp, _):
            verdict = scan(rules, {"qmp": str(qmp), "os": "physical"})
            saved = pmemsave(qmp, planted, len(eicar()), tmp_path / "planted.raw")
    assert saved == eicar()  # what the guest sees there
    assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete
    assert heads(verdict) == [planted]


@pytest.mark.parametrize("access", ["auto", "process"])
@pytest.mark.parametrize("ram", ["hugetlbfs", "memfd-hugetlb"])
def test_the_scan_allocates_no_huge_page_of_the_guest(tmp_path, rules, ram, access):
    """A guest that never ran holds almost none of its huge pages; reading the rest must not
    allocate them (a hole of a hugetlbfs file read through QEMU's mapping would be)."""
    marker = 0x123_4000
    with hugetlbfs(PAGES) as mnt:
        if ram == "hugetlbfs":
            backend = f"memory-backend-file,id=mem,size={MEMORY_MIB}M,mem-path={mnt},share=off"
        else:
            backend = f"memory-backend-memfd,id=mem,size={MEMORY_MIB}M,share=on,hugetlb=on"
        with stopped_qemu(tmp_path, backend, (marker,)) as (qmp, pid):
            before = huge_pages_of(pid)
            verdict = scan(rules, {"qmp": str(qmp), "os": "physical", "access": access})
            after = huge_pages_of(pid)
    assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete, verdict.coverage.gaps[:2]
    assert heads(verdict) == [marker]
    assert 0 < before < MEMORY_MIB * MiB // HUGE // 2  # the test means something: most not allocated
    assert after == before, f"the scan allocated {after - before} huge pages"


def huge_pages_of(pid: int) -> int:
    """Huge pages mapped in process ``pid`` (``/proc/PID/smaps``: Private_ and Shared_Hugetlb)."""
    kib = sum(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines()
        if line.startswith(("Private_Hugetlb:", "Shared_Hugetlb:"))
    )
    return kib * 1024 // HUGE
