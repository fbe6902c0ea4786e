"""Faults against a real vcsim: outage mid-action, restart, lost session, VM deleted mid-scan."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pyVmomi import vim

from scanner.lab.vcsim import Vcsim
from scanner.vcenter.connection import Connection
from scanner.vcenter.inventory import list_vms
from scanner.vcenter.store import NewAction
from scanner.vcenter.triggers import EVENT_TYPES
from tests.vcenter.conftest import running_app, settings_for
from tests.vcenter.sim import SimClient

pytestmark = [pytest.mark.lab, pytest.mark.slow]
VM = "DC0_H0_VM1"


async def quarantine_order(svc, uuid: str) -> str:  # type: ignore[no-untyped-def]
    """A MALICIOUS outcome for VM with a disconnect step, written to the outbox as the pipeline does."""
    job, _ = await asyncio.to_thread(svc.store.create_job, f"test:{time.time_ns()}", "api", uuid, VM, "DC0_H0", None)
    await asyncio.to_thread(
        svc.store.finish_job, job.id, "DONE", "MALICIOUS", 100, (), [NewAction("disconnect", {})], False
    )
    svc._wake.set()
    return job.id


async def until(check, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    """Poll the async ``check`` until it returns something true (a state, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)
    return value


async def caught_up(svc, sim: SimClient) -> bool:  # type: ignore[no-untyped-def]
    """The trigger watcher has handled every power-on and migration event vcsim holds (its stored
    cursor is at or past the newest such event's key, asked of vcsim directly)."""
    wanted = vim.event.EventFilterSpec(eventTypeId=[t for types in EVENT_TYPES.values() for t in types])
    newest = max(int(e.key) for e in await asyncio.to_thread(sim.content.eventManager.QueryEvents, wanted))
    cursor = await asyncio.to_thread(svc.store.cursor, svc.conn.instance_uuid)
    return cursor is not None and cursor >= newest


async def first_action(svc):  # type: ignore[no-untyped-def]
    return next(iter(await svc.list_actions()), None)


async def _tried(svc):  # type: ignore[no-untyped-def]
    """The one action, once the relay has tried it at least once."""
    action = await first_action(svc)
    return action if action is not None and action.attempts >= 1 and action.last_error else None


def reconfigures(sim: SimClient) -> int:
    return len(sim.events(VM, "VmReconfiguredEvent"))


def test_hung_vcenter_action_completes_once_after_it_recovers(
    vcsim: Vcsim, sim: SimClient, tmp_path: Path, state_url: str
):
    sim.set_nics(VM, connected=True, start=True)
    before = reconfigures(sim)

    async def scenario() -> None:
        settings = settings_for(vcsim, triggers=frozenset())
        settings = type(settings)(**{**settings.__dict__, "call_timeout": 1.0})
        async with running_app(settings, tmp_path / "state", state_url) as app:
            svc = app.vcenter
            await svc.list_vms()
            uuid = sim.uuid(VM)
            vcsim.pause()  # vCenter hangs: calls time out, the outbox retries
            try:
                await quarantine_order(svc, uuid)
                action = await until(lambda: _tried(svc))
                assert action.state == "PENDING" and action.attempts >= 1
                assert "no answer" in action.last_error or "timed out" in action.last_error
            finally:
                vcsim.resume()
            await svc.wait_idle(60)
            (action,) = await svc.list_actions()
            assert action.state == "DONE"

    asyncio.run(scenario())
    assert all(not c and not s for _, c, s in sim.nics(VM))
    assert reconfigures(sim) - before == 1  # applied once, although asked again while it hung


def test_vcsim_restart_mid_action_outbox_finishes(vcsim: Vcsim, tmp_path: Path, state_url: str):
    async def scenario() -> None:
        async with running_app(settings_for(vcsim, triggers=frozenset()), tmp_path / "state", state_url) as app:
            svc = app.vcenter
            await svc.list_vms()
            sim = SimClient(vcsim.port)
            sim.set_nics(VM, connected=True, start=True)
            uuid = sim.uuid(VM)
            vcsim.stop()
            await quarantine_order(svc, uuid)
            action = await until(lambda: _tried(svc))
            assert action.state == "PENDING" and action.last_error
            vcsim.restart()  # a fresh inventory: same VM, NIC in its default state
            sim = SimClient(vcsim.port)
            sim.set_nics(VM, connected=True, start=True)
            await svc.wait_idle(90)
            (action,) = await svc.list_actions()
            assert action.state == "DONE", action
            assert all(not c and not s for _, c, s in sim.nics(VM))
            assert len(sim.events(VM, "VmReconfiguredEvent")) == 2  # ours + the test's own set_nics

    asyncio.run(scenario())


def test_lost_session_logs_in_again(vcsim: Vcsim, tmp_path: Path, state_url: str):
    async def scenario() -> None:
        async with running_app(settings_for(vcsim, triggers=frozenset()), tmp_path / "state", state_url) as app:
            svc = app.vcenter
            assert len(await svc.list_vms()) == 4
            logins = svc.conn.logins
            await asyncio.to_thread(svc.conn.invalidate_session)  # as an expired or terminated session
            assert len(await svc.list_vms()) == 4  # the caller never sees NotAuthenticated
            assert svc.conn.logins == logins + 1

    asyncio.run(scenario())


def test_calls_that_lose_one_session_together_log_in_again_once(vcsim: Vcsim) -> None:
    """Several loops (triggers, placements, outbox, keep-alive) call vCenter at once; when the
    session is lost under all of them, one logs in again and the others use that session."""
    conn = Connection(settings_for(vcsim))

    async def scenario() -> tuple[int, list[int]]:
        await conn.call(list_vms, "list VMs")
        logins = conn.logins
        await asyncio.to_thread(conn.invalidate_session)
        found = await asyncio.gather(*(conn.call(list_vms, "list VMs") for _ in range(8)))
        return conn.logins - logins, [len(vms) for vms in found]

    try:
        again, found = asyncio.run(scenario())
    finally:
        conn.close()
    assert found == [4] * 8
    assert again == 1


def test_vm_deleted_during_scan(vcsim: Vcsim, sim: SimClient, lab_vmem: Path, tmp_path: Path, state_url: str):
    sim.place_memory(VM, lab_vmem)

    async def scenario() -> None:
        async with running_app(settings_for(vcsim, triggers=frozenset()), tmp_path / "state", state_url) as app:
            svc = app.vcenter
            submit = svc._submit

            async def delete_then_submit(job, acquired):  # type: ignore[no-untyped-def]
                await asyncio.to_thread(sim.destroy, VM)
                return await submit(job, acquired)

            svc._submit = delete_then_submit
            job, _ = await svc.scan_vm(sim.uuid(VM), "tester")
            await svc.wait_idle(120)
            done = (await svc.list_jobs())[0]
            assert done.id == job.id and done.verdict == "MALICIOUS"  # what the memory held, VM gone or not
            actions = await svc.list_actions()
            assert actions and all(a.state == "ABANDONED" for a in actions), actions
            assert all("no longer exists" in a.result or "not in vCenter" in a.result for a in actions)
            assert not (tmp_path / "state" / "vcenter" / job.id).exists()  # downloads discarded

    asyncio.run(scenario())


def test_download_failure_is_error_and_snapshot_removed(vcsim: Vcsim, sim: SimClient, tmp_path: Path, state_url: str):
    """No memory file on the datastore: truthful INCOMPLETE, never CLEAN; the snapshot is gone."""

    async def scenario() -> None:
        async with running_app(settings_for(vcsim, triggers=frozenset()), tmp_path / "state", state_url) as app:
            svc = app.vcenter
            await svc.scan_vm(sim.uuid(VM), "tester")
            await svc.wait_idle(60)
            job = (await svc.list_jobs())[0]
            assert job.verdict == "INCOMPLETE" and any("not on the datastore" in n for n in job.notes)
            assert sim.snapshots(VM) == []
            assert sim.attributes(VM)["avscan.verdict"] == "INCOMPLETE"
            assert not [a for a in await svc.list_actions() if a.kind in ("tag", "disconnect")]

    asyncio.run(scenario())


def test_power_on_and_migration_events_trigger_once_across_restart(
    vcsim: Vcsim, sim: SimClient, tmp_path: Path, state_url: str
):
    async def scenario() -> None:
        state = tmp_path / "state"
        async with running_app(settings_for(vcsim), state, state_url) as app:
            await until(lambda: caught_up(app.vcenter, sim))  # the watcher is set up
            sim.power_off(VM)
            sim.power_on(VM)
            await until(lambda: caught_up(app.vcenter, sim))  # both events handled
            await app.vcenter.wait_idle(60)
            jobs = await app.vcenter.list_jobs()
            assert [j.reason for j in jobs] == ["power_on"]
        sim.post_migrated(VM)  # while the service is down
        async with running_app(settings_for(vcsim), state, state_url) as app:
            await until(lambda: caught_up(app.vcenter, sim))
            await app.vcenter.wait_idle(60)
            jobs = await app.vcenter.list_jobs()
            assert sorted(j.reason for j in jobs) == ["migrate", "power_on"]  # the old event not repeated

    asyncio.run(scenario())
