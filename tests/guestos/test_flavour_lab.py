"""Another Debian kernel flavour (``linux-image-amd64``) works with no code change: profile from memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.acquisition.memory.raw import RawMemory
from scanner.engine import Engine, EngineSettings
from scanner.rulesets import LoadedRuleset
from scanner.targets.processes import process_target
from scanner.verdicts import VerdictKind

from .conftest import StartGuest

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_generic_amd64_kernel_is_scanned_per_process(
    start_lab_guest: StartGuest, rules: LoadedRuleset, tmp_path: Path
) -> None:
    guest = start_lab_guest(memory_mib=256, markers=1, variant="flavour", flavour="amd64")
    guest.pause()
    guest.dump_raw(tmp_path / "guest.raw")
    engine = Engine(EngineSettings(threads=2))
    try:
        verdict = engine.scan(rules, process_target(RawMemory(str(tmp_path / "guest.raw"))))
    finally:
        engine.close()
    assert verdict.details["os"] == "linux", verdict.details
    assert "-amd64" in verdict.details["os.banner"] and "cloud" not in verdict.details["os.banner"]
    assert verdict.kind is VerdictKind.MALICIOUS
    pids = {int(f.context["pid"]) for f in verdict.findings if f.context.get("pid")}
    assert pids == set(guest.marker_pids)
    assert str(guest.clean_pid) not in {f.context.get("pid") for f in verdict.findings}
