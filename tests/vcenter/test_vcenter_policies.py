"""Policies on a real vcsim: dry run, auto-release after a clean rescan, a vCenter task that keeps failing."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from scanner.cli.main import cli
from scanner.lab.pytest_plugin import start_or_skip
from scanner.lab.vcsim import PASSWORD, USER, Vcsim
from scanner.v1 import vcenter_pb2 as pb
from scanner.v1 import vcenter_pb2_grpc
from scanner.vcenter import service as vcenter_service
from scanner.vcenter.store import NewAction
from tests.support.service import Service
from tests.vcenter.conftest import running_app, service_state, settings_for
from tests.vcenter.sim import SimClient
from tests.vcenter.vcsim_rest import attached_tag_names

pytestmark = [pytest.mark.lab, pytest.mark.slow]
VM = "DC0_H0_VM0"


@pytest.fixture(scope="module")
def clean_vmem(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The RAM of a real lab guest like ``lab_vmem``'s but with no marker process: a genuinely clean guest."""
    path = tmp_path_factory.mktemp("clean") / "clean.vmem"
    with start_or_skip(memory_mib=256, markers=0, variant="vc") as guest:
        guest.dump_raw(path)
    yield path


async def wait_for(predicate, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


class NoJitter:
    """Stands in for the ``random`` module in the vCenter service: backoff jitter factor 1.0."""

    @staticmethod
    def random() -> float:
        return 0.5


def power_state(sim: SimClient, name: str) -> str:
    return str(sim.vm(name).runtime.powerState)


def test_dry_run_records_the_ladder_and_changes_nothing_in_vcenter(
    vcsim: Vcsim, sim: SimClient, lab_vmem: Path, tmp_path: Path, state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ladder step earned (thresholds 1) is DRY_RUN in ListActions and the CLI; vCenter is untouched."""
    sim.set_nics(VM, connected=True, start=True)
    sim.add_nic(VM, connected=False, start=True)
    before = sim.nics(VM)
    reconfigured = len(sim.events(VM, "VmReconfiguredEvent"))
    sim.place_memory(VM, lab_vmem)
    config = tmp_path / "avscan.toml"
    config.write_text(
        f'[vcenter]\nurl = "{vcsim.url}"\nuser = "{USER}"\ninsecure = true\npassword_env = "VC_PW"\n'
        "[vcenter.policy]\ntriggers = []\ndry_run = true\nscan_disks = false\n"
        "tag_at = 1\ndisconnect_at = 1\nsnapshot_at = 1\nsuspend_at = 1\n" + service_state(state_url)
    )
    monkeypatch.setenv("VC_PW", PASSWORD)
    service = Service(tmp_path / "state", config)
    try:
        runner = CliRunner()
        server = ["--server", service.address]
        uuid = sim.uuid(VM)
        result = runner.invoke(cli, ["vcenter", "scan", *server, uuid])
        assert result.exit_code == 0, result.output
        with grpc.insecure_channel(service.address) as channel:
            stub = vcenter_pb2_grpc.VCenterServiceStub(channel)  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                actions = stub.ListActions(pb.ListActionsRequest(vm_uuid=uuid), timeout=30).actions
                kinds = {a.kind: a for a in actions}
                if kinds.get("event") and kinds["event"].state == pb.ACTION_STATE_DONE:
                    break
                time.sleep(0.3)
            jobs = stub.ListJobs(pb.ListJobsRequest(), timeout=30).jobs
        assert [j.verdict for j in jobs] == ["MALICIOUS"]
        ladder = ("tag", "disconnect", "snapshot", "suspend")
        for step in ladder:  # recorded, with what it would have done, and never tried
            assert kinds[step].state == pb.ACTION_STATE_DRY_RUN, kinds[step]
            assert kinds[step].result.startswith("dry run: would ") and kinds[step].attempts == 0
        assert "disconnect the vNICs" in kinds["disconnect"].result
        # the verdict itself is published (documented): attributes and the event
        assert kinds["attributes"].state == pb.ACTION_STATE_DONE
        assert sim.attributes(VM)["avscan.verdict"].startswith("MALICIOUS")
        result = runner.invoke(cli, ["vcenter", "actions", *server, "--vm", uuid])
        assert result.exit_code == 0, result.output
        lines = {line.split()[2]: line for line in result.output.splitlines() if line.strip()}
        for step in ladder:
            assert " DRY_RUN " in lines[step] and "dry run: would" in lines[step], result.output
        # nothing changed in vCenter: NICs, no tag, no snapshot, still powered on, no reconfigure at
        # all; and nothing is left PENDING for the relay to apply later
        assert {a.state for a in actions} <= {pb.ACTION_STATE_DONE, pb.ACTION_STATE_DRY_RUN}, actions
        assert sim.nics(VM) == before
        assert sim.snapshots(VM) == []
        assert power_state(sim, VM) == "poweredOn"
        assert len(sim.events(VM, "VmReconfiguredEvent")) == reconfigured
    finally:
        assert service.terminate() == 0, service.output()[-2000:]
    assert attached_tags(vcsim, sim) == []


def attached_tags(vcsim: Vcsim, sim: SimClient) -> list[tuple[str, str]]:
    """Tags attached to VM, read from vcsim's REST tagging API directly (a fresh vcsim has none)."""
    return attached_tag_names(vcsim, sim.vm(VM)._moId)


def test_auto_release_after_clean_rescan_but_not_after_incomplete(
    vcsim: Vcsim, sim: SimClient, lab_vmem: Path, clean_vmem: Path, tmp_path: Path, state_url: str
) -> None:
    """MALICIOUS quarantines; an INCOMPLETE rescan keeps it; a CLEAN rescan releases with NICs restored exactly."""
    sim.set_nics(VM, connected=True, start=True)
    sim.add_nic(VM, connected=False, start=True)
    sim.add_nic(VM, connected=True, start=False)
    before = sim.nics(VM)
    assert len(before) == 3
    # vcsim names a snapshot's files after the first free index, so every acquisition here is Snapshot1
    vmem = sim.place_memory(VM, lab_vmem)  # the infected guest

    async def scenario() -> None:
        settings = settings_for(vcsim, triggers=frozenset(), auto_release=True, snapshot_at=101, scan_disks=False)
        async with running_app(settings, tmp_path / "state", state_url) as app:
            svc = app.vcenter
            assert svc is not None
            uuid = sim.uuid(VM)
            await svc.scan_vm(uuid, "tester")
            await svc.wait_idle(120)
            assert (await svc.list_jobs())[0].verdict == "MALICIOUS"
            assert all(not c and not s for _, c, s in sim.nics(VM))
            kinds = {a.kind: a for a in await svc.list_actions(uuid)}
            assert kinds["disconnect"].state == "DONE" and kinds["tag"].state == "DONE"
            assert await asyncio.to_thread(attached_tags, vcsim, sim) == [("avscan", "avscan-quarantine")]

            # second scan: the memory file is gone from the datastore -> INCOMPLETE -> the quarantine stays
            vmem.unlink()
            await svc.scan_vm(uuid, "tester")
            await svc.wait_idle(120)
            job = (await svc.list_jobs())[0]
            assert job.verdict == "INCOMPLETE" and any("not on the datastore" in n for n in job.notes), job
            assert all(not c and not s for _, c, s in sim.nics(VM))
            actions = await svc.list_actions(uuid)
            assert not [a for a in actions if a.kind in ("restore_network", "untag", "release_attributes")]
            assert {a.kind: a.state for a in actions}["disconnect"] == "DONE"
            assert sim.attributes(VM)["avscan.verdict"].startswith("MALICIOUS")  # an INCOMPLETE does not replace it

            # third scan: a real clean guest's RAM -> CLEAN -> released automatically
            sim.place_memory(VM, clean_vmem)
            await svc.scan_vm(uuid, "tester")
            await wait_for(lambda: sim.attributes(VM).get("avscan.release", "").startswith("released"))
            await svc.wait_idle(60)
            job = (await svc.list_jobs())[0]
            assert job.verdict == "CLEAN", job
            assert sim.nics(VM) == before  # connected and startConnected exactly as before, each NIC
            states = {a.kind: a.state for a in await svc.list_actions(uuid)}
            assert states["disconnect"] == "REVERTED" and states["tag"] == "REVERTED"
            assert states["restore_network"] == "DONE" and states["untag"] == "DONE"
            assert sim.attributes(VM)["avscan.release"].startswith("released by vcenter")
            assert await asyncio.to_thread(attached_tags, vcsim, sim) == []
            audit = await asyncio.to_thread(app.db.audit_log, 50)
            assert any(r.action == "vcenter.release" and "clean rescan" in r.detail for r in audit)

    asyncio.run(scenario())


def test_failing_vcenter_task_retries_with_backoff_then_fails_for_good(
    vcsim: Vcsim, sim: SimClient, tmp_path: Path, state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VM turned into a template cannot be reconfigured: vcsim fails the ReconfigVM task (NotSupported).

    The disconnect step is retried with growing delays, never DONE, and after ``max_attempts`` it is
    FAILED with vCenter's error, audited; it does not loop, and the VM's next step still runs.
    """
    sim.power_off(VM)
    sim.set_nics(VM, connected=True, start=True)
    sim.vm(VM).MarkAsTemplate()  # as an administrator may do between a verdict and its quarantine
    assert sim.vm(VM).config.template
    before = sim.nics(VM)
    reconfigured = len(sim.events(VM, "VmReconfiguredEvent"))

    async def scenario() -> None:
        async with running_app(settings_for(vcsim, triggers=frozenset()), tmp_path / "state", state_url) as app:
            svc = app.vcenter
            assert svc is not None
            assert svc.policy.max_attempts == 5  # the default
            tries: list[tuple[float, float]] = []
            failed = svc.store.action_failed

            def record(seq: int, error: str, next_at: float, give_up: str = "") -> None:
                tries.append((time.time(), next_at))
                failed(seq, error, next_at, give_up)

            svc.store.action_failed = record  # type: ignore[method-assign]
            monkeypatch.setattr(vcenter_service, "random", NoJitter)  # waits of exactly 0.5 * 2**n s
            uuid = sim.uuid(VM)
            job, _ = await asyncio.to_thread(svc.store.create_job, "test:failing", "api", uuid, VM, "DC0_H0", None)
            await asyncio.to_thread(
                svc.store.finish_job,
                job.id,
                "DONE",
                "MALICIOUS",
                100,
                (),
                [NewAction("disconnect", {}), NewAction("tag", {})],
                False,
            )
            svc._wake.set()
            await wait_for(lambda: len(tries) >= 2, 30)
            disconnect = next(a for a in await svc.list_actions(uuid) if a.kind == "disconnect")
            assert disconnect.state == "PENDING" and disconnect.attempts >= 1
            assert "task failed" in disconnect.last_error and "NotSupported" in disconnect.last_error
            tag = next(a for a in await svc.list_actions(uuid) if a.kind == "tag")
            assert tag.state == "PENDING" and tag.attempts == 0  # the ladder keeps its order meanwhile
            await svc.wait_idle(60)
            actions = {a.kind: a for a in await svc.list_actions(uuid)}
            disconnect = actions["disconnect"]
            assert disconnect.state == "FAILED", disconnect
            assert disconnect.attempts == 5 and disconnect.done_at is not None
            assert "NotSupported" in disconnect.last_error and "gave up after 5 attempts" in disconnect.result
            assert actions["tag"].state == "DONE"  # the next step was not blocked forever
            # backoff, from the times the product set (no wall-clock thresholds): no retry came
            # before its due time, and each due time is at least the doubled wait after the last
            assert len(tries) == 5
            assert all(later >= due for (_, due), (later, _) in itertools.pairwise(tries)), tries
            spacing = [b[1] - a[1] for a, b in itertools.pairwise(tries[:-1])]
            assert all(s >= 0.5 * 2 ** (n + 1) for n, s in enumerate(spacing)), spacing
            audit = await asyncio.to_thread(app.db.audit_log, 50)
            assert any(r.action == "vcenter.action_failed" and "NotSupported" in r.detail for r in audit)
            # terminal: nothing is due any more, so the relay has nothing to try again
            assert await asyncio.to_thread(svc.store.next_due) is None

    asyncio.run(scenario())
    assert sim.nics(VM) == before  # vCenter really refused: nothing changed
    # vCenter saw the reconfigure (its event log has it); the five tries themselves are counted above
    assert len(sim.events(VM, "VmReconfiguredEvent")) > reconfigured
