"""vCenter hardening on a real vcsim (issue 15, item 7).

Everything the product did in vCenter is read back from vcsim directly with pyvmomi (the lab's
administrator client and raw managed objects), never through ``scanner.vcenter``. The guest
memory is a small flat ``.vmem`` with an EICAR string planted at test time.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from scanner.lab import eicar
from scanner.lab.vcsim import Vcsim
from scanner.vcenter.triggers import Trigger
from tests.vcenter.conftest import running_app, settings_for
from tests.vcenter.sim import SimClient

pytestmark = [pytest.mark.slow]
VM = "DC0_H0_VM0"


def planted_vmem(path: Path, infected: bool = True) -> Path:
    with path.open("wb") as f:
        f.truncate(4 << 20)
        if infected:
            f.seek(1 << 20)
            f.write(eicar())
    return path


async def wait_for(predicate: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


def guest_control(sim: SimClient) -> list[bool]:
    """allowGuestControl of each vNIC, read from vcsim."""
    return [
        bool(d.connectable.allowGuestControl)
        for d in sim.vm(VM).config.hardware.device
        if isinstance(d, vim.vm.device.VirtualEthernetCard) and d.connectable is not None
    ]


def field_names(sim: SimClient) -> set[str]:
    return {f.name for f in sim.content.customFieldsManager.field or []}


def snapshot_nodes(sim: SimClient) -> list[Any]:
    tree = sim._snapshot_tree(sim.vm(VM))
    out, stack = [], list(tree.rootSnapshotList or []) if tree is not None else []
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.childSnapshotList or [])
    return out


def test_quarantine_takes_nic_control_from_the_guest_and_a_later_incomplete_keeps_the_verdict(
    vcsim: Vcsim, sim: SimClient, tmp_path: Path, state_url: str
) -> None:
    sim.set_nics(VM, connected=True, start=True)
    assert guest_control(sim) and all(guest_control(sim))
    vmem = sim.place_memory(VM, planted_vmem(tmp_path / "infected.vmem"))

    async def scenario() -> None:
        settings = settings_for(vcsim, triggers=frozenset(), snapshot_at=101, scan_disks=False)
        async with running_app(settings, tmp_path / "state", state_url) as app:
            svc = app.vcenter
            assert svc is not None
            uuid = sim.uuid(VM)
            await svc.scan_vm(uuid, "tester")
            await svc.wait_idle(120)
            assert sim.attributes(VM)["avscan.verdict"].startswith("MALICIOUS")
            assert not any(guest_control(sim)), "VMware Tools in the guest could reconnect the NICs"

            vmem.unlink()  # the rescan cannot read memory: INCOMPLETE
            await svc.scan_vm(uuid, "tester")
            await svc.wait_idle(120)
            assert (await svc.list_jobs())[0].verdict == "INCOMPLETE"
            attributes = sim.attributes(VM)
            assert attributes["avscan.verdict"].startswith("MALICIOUS"), attributes
            assert "INCOMPLETE" in attributes["avscan.lastScan"]

            await svc.release(uuid, "alice", reason="ticket 42")
            await svc.wait_idle(60)
            attributes = sim.attributes(VM)
            assert attributes["avscan.release"].startswith("released by alice at ")
            assert attributes["avscan.release"].endswith(": ticket 42")
            assert "RELEASED" not in attributes["avscan.verdict"]
            assert all(guest_control(sim)), "release gives the guest its NIC control back"

    asyncio.run(scenario())


def test_custom_fields_are_defined_at_start(vcsim: Vcsim, sim: SimClient, tmp_path: Path, state_url: str) -> None:
    assert not {n for n in field_names(sim) if n.startswith("avscan.")}

    async def scenario() -> None:
        async with running_app(settings_for(vcsim, triggers=frozenset({"attribute"})), tmp_path / "state", state_url):
            await wait_for(lambda: {"avscan.request", "avscan.verdict", "avscan.release"} <= field_names(sim))

    asyncio.run(scenario())


def test_one_request_one_job_and_a_new_request_after_the_clear_is_a_new_job(
    vcsim: Vcsim, sim: SimClient, tmp_path: Path, state_url: str
) -> None:
    sim.place_memory(VM, planted_vmem(tmp_path / "clean.vmem", infected=False))

    async def scenario() -> None:
        settings = settings_for(vcsim, triggers=frozenset({"attribute"}), scan_disks=False)
        async with running_app(settings, tmp_path / "state", state_url) as app:
            svc = app.vcenter
            assert svc is not None
            await wait_for(lambda: "avscan.request" in field_names(sim))
            for round_ in (1, 2):
                await asyncio.to_thread(sim.set_attribute, VM, "avscan.request", "scan")
                await wait_for(lambda: sim.attributes(VM).get("avscan.request") == "")
                await svc.wait_idle(120)
                jobs = await svc.list_jobs()
                assert len(jobs) == round_, [(j.reason, j.verdict) for j in jobs]
                done = await wait_for(lambda: sim.attributes(VM).get("avscan.lastScan", "").count("job "))
                assert done
            # the race itself: a sweep that read "scan" just before our clear landed reports it late
            acks = [a for a in await svc.list_actions(sim.uuid(VM)) if a.kind.startswith("request_ack")]
            read_before_clear = max(a.done_at or 0 for a in acks) - 0.001
            stale = Trigger("attribute", sim.uuid(VM), VM, "DC0_H0", value="scan", seen_at=read_before_clear)
            await svc.trigger(stale)
            await svc.wait_idle(120)
            assert len(await svc.list_jobs()) == 2, "a request read before its clear landed is not a new one"

    asyncio.run(scenario())


def test_events_carry_no_appliance_paths(vcsim: Vcsim, sim: SimClient, tmp_path: Path, state_url: str) -> None:
    empty = tmp_path / "empty.vmem"
    empty.write_bytes(b"")
    sim.place_memory(VM, empty)  # refused: "no guest memory in it", naming the downloaded file

    async def scenario() -> None:
        state = tmp_path / "state"
        async with running_app(settings_for(vcsim, triggers=frozenset(), scan_disks=False), state, state_url) as app:
            svc = app.vcenter
            assert svc is not None
            await svc.scan_vm(sim.uuid(VM), "tester")
            await svc.wait_idle(120)
            job = (await svc.list_jobs())[0]
            assert any(str(state) in n for n in job.notes), job.notes  # the appliance's own record keeps them
        messages = [e.message or "" for e in sim.events(VM, "GeneralUserEvent") if "avscan" in (e.message or "")]
        assert messages and "ERROR" in messages[0] and "no guest memory in it" in messages[0], messages
        assert not [m for m in messages if str(tmp_path) in m], messages

    asyncio.run(scenario())


def test_forensic_snapshots_are_named_described_and_expire(
    vcsim: Vcsim, sim: SimClient, tmp_path: Path, state_url: str
) -> None:
    sim.place_memory(VM, planted_vmem(tmp_path / "infected.vmem"))

    async def scenario() -> None:
        settings = settings_for(vcsim, triggers=frozenset(), snapshot_at=1, scan_disks=False)
        async with running_app(settings, tmp_path / "state", state_url) as app:
            svc = app.vcenter
            assert svc is not None
            job, _ = await svc.scan_vm(sim.uuid(VM), "tester")
            await svc.wait_idle(120)
            nodes = snapshot_nodes(sim)
            assert [n.name for n in nodes] == [f"avscan-forensic-{job.id}"]
            assert "FORENSIC" in nodes[0].description and "30 days" in nodes[0].description
            assert await svc.expire_forensic() == []  # young: kept
        expiring = settings_for(vcsim, triggers=frozenset(), forensic_retention_days=1e-9)
        async with running_app(expiring, tmp_path / "state", state_url) as app:
            assert app.vcenter is not None
            assert await app.vcenter.expire_forensic() == [f"{VM}: avscan-forensic-{job.id}"]
            assert snapshot_nodes(sim) == []

    asyncio.run(scenario())
