"""Live guests scanned from outside: real QEMU guests (the lab), LibVMI FILE mode, QMP control."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from scanner.api.client import guest_target
from scanner.engine import Engine, EngineSettings
from scanner.lab import eicar
from scanner.rulesets import compile_path
from scanner.targets import TargetSpec, build_target
from scanner.v1 import scans_pb2, verdict_pb2
from scanner.verdicts import VerdictKind
from tests.support.public_rules import SIGNATURE_BASE
from tests.support.service import Service

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def default_rules():
    return compile_path(REPO / "signatures")


@pytest.fixture
def service(tmp_path):
    svc = Service(tmp_path / "state")
    yield svc
    svc.close()


def marker_addresses(findings) -> list[int]:
    return sorted(
        s.address for f in findings if f.rule == "EICAR_Test_File" for s in f.strings if s.identifier == "$head"
    )


def test_live_scan_through_grpc_finds_the_marker_where_it_really_is(lab_guest, service):
    with service.client() as client:
        scan = client.start_scan(guest_target(ram=str(lab_guest.ram_path)))
        done = client.wait(scan.scan_id, timeout=120)
        assert done.state == scans_pb2.SCAN_STATE_DONE
        assert done.verdict.kind == verdict_pb2.VERDICT_KIND_MALICIOUS
        assert done.verdict.coverage.complete
        findings = [f for page in client.findings(scan.scan_id) for f in page.findings]
    addresses = marker_addresses(findings)
    assert len(addresses) == lab_guest.markers  # one copy per marker process heap
    ram = lab_guest.ram_path.read_bytes()
    for address in addresses:
        assert ram[address : address + len(eicar())] == eicar()


def test_ruleset_without_the_marker_rule_finds_nothing(lab_guest, service, tmp_path):
    rule = b'rule Not_In_Guest { strings: $a = "AVSCAN-NEVER-PRESENT-4f1d" condition: $a }\n'
    with service.client() as client:
        pushed = client.push_ruleset([("other.yar", rule)], "other").ruleset
        scan = client.start_scan(guest_target(qmp=str(lab_guest.scanner_qmp_path)), ruleset_digest=pushed.digest)
        done = client.wait(scan.scan_id, timeout=120)
    assert done.verdict.kind == verdict_pb2.VERDICT_KIND_CLEAN
    assert done.verdict.ruleset_digest == pushed.digest
    coverage = done.verdict.coverage
    # All RAM once, plus the page seams of its processes read again across their boundaries.
    seams = coverage.accounting["processes.seam_bytes"]
    assert seams > 0, dict(done.verdict.details)
    assert coverage.bytes_scanned + coverage.bytes_zero == (lab_guest.memory_mib << 20) + seams


def scan_watching(guest, engine, rules, spec):  # type: ignore[no-untyped-def]
    """Scan ``spec`` in a thread; meanwhile poll the guest's run state (QMP ``query-status`` on
    the lab's own socket) and return the runs of equal answers as [status, polls] pairs, so the
    test sees what happened and for how many polls, not one sample taken after a sleep."""
    runs: list[list[Any]] = []
    with build_target(spec) as target, ThreadPoolExecutor(1) as pool:
        future = pool.submit(engine.scan, rules, target)
        while not future.done():
            status = guest.status()
            if runs and runs[-1][0] == status:
                runs[-1][1] += 1
            else:
                runs.append([status, 1])
        return future.result(), runs


def test_paused_mode_pauses_resumes_and_records_the_pause(lab_guest, default_rules):
    spec = TargetSpec("guest", {"qmp": str(lab_guest.scanner_qmp_path), "consistency": "paused"})
    lab_guest.events()  # forget earlier events
    engine = Engine(EngineSettings(threads=2))
    try:
        with build_target(spec) as target:
            verdict = engine.scan(default_rules, target)
    finally:
        engine.close()
    assert verdict.kind is VerdictKind.MALICIOUS
    assert verdict.details["consistency"] == "paused"
    assert float(verdict.details["paused_seconds"]) > 0
    assert verdict.details["pause_cut_short"] == "false"
    assert [e["event"] for e in lab_guest.events()] == ["STOP", "RESUME"]  # QEMU's own record
    assert lab_guest.status() == "running"


def test_a_live_scan_leaves_the_guests_ram_file_holes_unallocated(lab_guest, default_rules):
    """The guest's RAM file is sparse; reading it must not turn its holes into host memory."""
    lab_guest.pause()  # nothing in the guest allocates while we measure
    try:
        before = os.stat(lab_guest.ram_path).st_blocks
        engine = Engine(EngineSettings(threads=2))
        try:
            with build_target(TargetSpec("guest", {"qmp": str(lab_guest.scanner_qmp_path)})) as target:
                verdict = engine.scan(default_rules, target)
        finally:
            engine.close()
        assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete
        grown = (os.stat(lab_guest.ram_path).st_blocks - before) * 512
        assert grown == 0, f"the scan allocated {grown} bytes of the guest's RAM file holes"
    finally:
        lab_guest.resume()


def test_pause_is_bounded_even_if_the_scan_goes_on(lab_guest):
    rules = compile_path(SIGNATURE_BASE)  # .ci/run checks it is there: slow enough to outlast the pause
    spec = TargetSpec(
        "guest",
        {"qmp": str(lab_guest.scanner_qmp_path), "consistency": "paused", "max_pause_seconds": 0.2, "snapshot": "off"},
    )
    engine = Engine(EngineSettings(threads=1, skip_zero_blocks=False))
    try:
        verdict, runs = scan_watching(lab_guest, engine, rules, spec)
    finally:
        engine.close()
    assert verdict.details["pause_cut_short"] == "true"
    assert float(verdict.details["paused_seconds"]) > 0
    # paused, then running again while the scan went on: most of the scan saw a running guest
    states = [status for status, _ in runs]
    (paused, paused_polls), (after, running_polls) = runs[states.index("paused") :]
    assert (paused, after) == ("paused", "running") and running_polls > paused_polls
    assert lab_guest.status() == "running"


def test_guest_killed_mid_scan_ends_incomplete_and_service_keeps_running(start_lab_guest, service):
    guest = start_lab_guest(memory_mib=512, markers=1, variant="killed")
    rules = [(p.name, p.read_bytes()) for p in sorted(SIGNATURE_BASE.glob("*.yar"))]
    assert rules, f"no public rules at {SIGNATURE_BASE} (SCANNER_RULESETS)"
    with service.client() as client:
        heavy = client.push_ruleset(rules, "heavy").ruleset  # slow enough to stop the guest mid-scan
        scan = client.start_scan(guest_target(qmp=str(guest.scanner_qmp_path)), ruleset_digest=heavy.digest)
        deadline = time.monotonic() + 60
        while not client.get_scan(scan.scan_id).progress.units_total and time.monotonic() < deadline:
            time.sleep(0.01)  # the guest is open and its memory planned: windows are being scanned
        guest.stop()
        done = client.wait(scan.scan_id, timeout=120)
        verdict = done.verdict
        assert verdict.kind in (verdict_pb2.VERDICT_KIND_INCOMPLETE, verdict_pb2.VERDICT_KIND_MALICIOUS)
        assert not verdict.coverage.complete
        reasons = [g.detail for g in verdict.coverage.gaps if g.kind == verdict_pb2.GAP_KIND_UNREADABLE]
        assert reasons and all("guest stopped" in r or "removed" in r for r in reasons)
        covered = verdict.coverage.bytes_scanned + verdict.coverage.bytes_zero
        assert covered < verdict.coverage.bytes_total
        assert service.health() == 1  # SERVING: one lost guest does not take the service down
        assert client.scan_bytes(eicar()).verdict.kind == verdict_pb2.VERDICT_KIND_MALICIOUS


def test_unavailable_drivers_say_why(tmp_path):
    from scanner.errors import Unavailable

    for params in ({"driver": "xen", "domain": "vm1"}, {"driver": "kvm", "domain": "vm1"}):
        with pytest.raises(Unavailable, match="unavailable"):
            build_target(TargetSpec("guest", params))
