"""End to end on a real vcsim: trigger -> snapshot -> download -> scan -> verdict -> quarantine -> release."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from scanner.lab.vcsim import Vcsim
from scanner.verdicts import VerdictKind
from tests.vcenter.conftest import DISK_MARKER, running_app, settings_for
from tests.vcenter.sim import SimClient
from tests.vcenter.vcsim_rest import attached_tag_names

pytestmark = [pytest.mark.lab, pytest.mark.slow]
VM = "DC0_H0_VM0"


async def wait_for(predicate, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_attribute_request_quarantines_and_release_restores(
    vcsim: Vcsim, sim: SimClient, lab_vmem: Path, lab_vmdk: Path, tmp_path: Path
):
    sim.set_nics(VM, connected=True, start=True)
    sim.add_nic(VM, connected=False, start=True)  # a second NIC in a different state: restored exactly
    before = sim.nics(VM)
    sim.place_memory(VM, lab_vmem)
    sim.place_disk(VM, lab_vmdk)  # the frozen parent disk the snapshot exposes

    async def scenario() -> None:
        async with running_app(settings_for(vcsim, snapshot_at=101), tmp_path / "state") as app:
            svc = app.vcenter
            assert svc is not None
            await asyncio.to_thread(sim.set_attribute, VM, "avscan.request", "please")
            await wait_for(lambda: sim.attributes(VM).get("avscan.verdict", "").startswith("MALICIOUS"))
            await svc.wait_idle(60)
            attrs = sim.attributes(VM)
            assert attrs["avscan.request"] == ""
            assert attrs["avscan.ruleset"].startswith("sha256:")
            jobs = await svc.list_jobs()
            assert len(jobs) == 1 and jobs[0].verdict == "MALICIOUS"
            assert jobs[0].scan_ids[0] in attrs["avscan.lastScan"]
            # the downloaded VMDK is scanned too: its filesystem is read and the dropped file named
            assert len(jobs[0].scan_ids) == 2
            disk, _ = await app.scans.get(jobs[0].scan_ids[1])
            assert disk.target.kind == "disk" and disk.verdict is not None
            assert disk.verdict.kind is VerdictKind.MALICIOUS and disk.verdict.coverage.complete
            on_disk = await asyncio.to_thread(app.db.findings, jobs[0].scan_ids[1])
            assert {(f.unit, f.rule) for f in on_disk} == {(f"disk:{DISK_MARKER}", "EICAR_Test_File")}
            assert [a.kind for a in await svc.list_actions()].count("request_ack") == 1
            findings = await asyncio.to_thread(app.db.findings, jobs[0].scan_ids[0])
            assert any("EICAR" in f.rule.upper() for f in findings)
            # NICs really disconnected in vcsim; the acquisition snapshot is gone
            assert all(not c and not s for _, c, s in sim.nics(VM))
            assert sim.snapshots(VM) == []
            kinds = {a.kind: a for a in await svc.list_actions()}
            assert kinds["disconnect"].state == "DONE" and kinds["tag"].state == "DONE"
            tags = await asyncio.to_thread(attached_tag_names, vcsim, sim.vm(VM)._moId)
            assert tags == [("avscan", "avscan-quarantine")]  # as vcsim's REST API itself reports
            assert "LogUserEvent missing" in kinds["event"].result
            assert any("avscan" in (e.message or "") for e in sim.events(VM, "GeneralUserEvent"))
            await svc.release(sim.uuid(VM), "tester")
            await svc.wait_idle(30)
            assert sim.nics(VM) == before
            assert sim.attributes(VM)["avscan.release"].startswith("released by tester")
            assert await asyncio.to_thread(attached_tag_names, vcsim, sim.vm(VM)._moId) == []

    asyncio.run(scenario())
