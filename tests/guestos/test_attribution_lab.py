"""Attribution failures are never silent: a process whose memory map cannot be walked is named.

A real lab dump (busybox guest, two marker processes) is corrupted so that both markers' VMA trees
loop on themselves. In the default mode (physical scan + attribution) the finding says attribution
failed and why, the verdict details name the process, and coverage accounts the task list
(``processes.listed`` = walked + failed); in ``processes`` mode the process is a gap. The same
counts reach the CLI summary and the gRPC verdict message.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from scanner.acquisition.memory.raw import RawMemory
from scanner.api.convert import verdict_message
from scanner.engine import Engine, EngineSettings
from scanner.guestos.linux.detect import open_linux
from scanner.outputs.ecs import ScanFacts, finding_document, scan_end_document
from scanner.outputs.text import summary
from scanner.rulesets import LoadedRuleset
from scanner.targets.awareness import AttributedMemoryTarget, AttributedUnit, memory_view
from scanner.targets.base import Target
from scanner.verdicts import Verdict, VerdictKind

from .conftest import Dumped

pytestmark = pytest.mark.lab


def scan(target: Target, rules: LoadedRuleset) -> Verdict:
    engine = Engine(EngineSettings(threads=2))
    try:
        with target:
            return engine.scan(rules, target)
    finally:
        engine.close()


@pytest.fixture(scope="module")
def broken(dumped: Dumped, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the dump where each marker's maple tree root is an inner node holding itself."""
    data = bytearray(dumped.raw.read_bytes())
    view = open_linux(RawMemory(str(dumped.raw))).kernel
    assert view is not None
    for proc in view.processes().processes:
        if proc.pid not in dumped.guest.marker_pids:
            continue
        root_at = proc.mm + view.layout["mm.mm_mt"] + view.layout["mt.ma_root"]
        root = view.kmem.u64(root_at)
        inner = (root & ~0xFF) | (2 << 3) | 2
        struct.pack_into("<Q", data, view.kmem.physical(root_at), inner)
        struct.pack_into("<Q", data, view.kmem.physical((root & ~0xFF) + view.layout["mr64.slot"]), inner)
    out = tmp_path_factory.mktemp("broken") / "guest.raw"
    out.write_bytes(data)
    return out


def test_default_mode_says_which_processes_could_not_be_walked(
    broken: Path, dumped: Dumped, rules: LoadedRuleset, tmp_path: Path
) -> None:
    verdict = scan(memory_view(RawMemory(str(broken)), {"os": "auto"}, tmp_path), rules)
    assert verdict.kind is VerdictKind.MALICIOUS
    hits = [f for f in verdict.findings if f.rule == "EICAR_Test_File"]
    assert hits and all("pid" not in f.context for f in hits)
    named = [f"pid {pid} (avscan-marker): maple" for pid in dumped.guest.marker_pids]
    for f in hits:
        assert f.context["attribution"].startswith("none (2 process(es) could not be walked")
        assert all(n in f.context["attribution"] for n in named)
    assert all(n in verdict.details["os.problems"] for n in named)
    counts = verdict.coverage.accounting
    assert counts["processes.failed"] == 2
    assert counts["processes.listed"] == counts["processes.walked"] + 2 > 10
    assert "Accounting processes.failed: 2" in list(summary(verdict, 1, 0.0))
    assert verdict_message(verdict, with_findings=False).coverage.accounting["processes.failed"] == 2
    facts = ScanFacts("scan-1", "memory")
    ecs = finding_document(hits[0], verdict, facts)
    assert ecs["avscan"]["finding"]["attribution"] == hits[0].context["attribution"]
    assert scan_end_document(verdict, facts)["avscan"]["scan"]["coverage"]["accounting"]["processes.failed"] == 2


def test_processes_mode_makes_the_processes_gaps(
    broken: Path, dumped: Dumped, rules: LoadedRuleset, tmp_path: Path
) -> None:
    verdict = scan(memory_view(RawMemory(str(broken)), {"os": "processes"}, tmp_path), rules)
    assert verdict.kind is not VerdictKind.CLEAN
    for pid in dumped.guest.marker_pids:
        gaps = [g for g in verdict.coverage.gaps if g.unit == f"os:pid {pid} (avscan-marker) memory map"]
        assert gaps and "maple" in gaps[0].detail
    counts = verdict.coverage.accounting
    assert counts["processes.failed"] == 2 and counts["processes.listed"] == counts["processes.walked"] + 2


def test_intact_dump_accounts_every_process_as_walked(dumped: Dumped, rules: LoadedRuleset, tmp_path: Path) -> None:
    verdict = scan(memory_view(RawMemory(str(dumped.raw)), {"os": "auto"}, tmp_path), rules)
    counts = verdict.coverage.accounting
    assert counts["processes.failed"] == 0 and counts["processes.walked"] == counts["processes.listed"]
    assert len(dumped.processes) <= counts["processes.listed"]
    assert all("attribution" not in f.context for f in verdict.findings if f.rule == "EICAR_Test_File")


def test_the_kernel_is_opened_while_the_scan_runs_with_the_same_attribution(
    dumped: Dumped, rules: LoadedRuleset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first matching window starts opening the guest's kernel on a background thread (it used
    to start only when the unit's findings were made, after its last window); the findings and their
    process names are the same as when the kernel is opened at the first finding. Seams are off:
    their process walk opens the kernel on the engine's deferred-plan thread before any match."""
    early = AttributedMemoryTarget(RawMemory(str(dumped.raw)), None, tmp_path, seams=False)
    verdict = scan(early, rules)
    background = early._attribution._thread  # type: ignore[attr-defined]
    assert background is not None and not background.is_alive()
    monkeypatch.setattr(AttributedUnit, "matched", lambda self: None)  # the reference: opened at the finding
    late = AttributedMemoryTarget(RawMemory(str(dumped.raw)), None, tmp_path, seams=False)
    reference = scan(late, rules)
    assert late._attribution._thread is None  # type: ignore[attr-defined]

    def shown(v: Verdict) -> list[tuple[str, int, list[tuple[str, str]]]]:
        return sorted((f.rule, f.address, sorted(f.context.items())) for f in v.findings)

    markers = [f for f in verdict.findings if f.rule == "EICAR_Test_File"]
    marker_pids = {str(p) for p in dumped.guest.marker_pids}
    assert markers and all(set(f.context["pid"].split(",")) & marker_pids for f in markers)
    assert shown(verdict) == shown(reference)
    assert verdict.details == reference.details
    assert verdict.coverage.accounting == reference.coverage.accounting
