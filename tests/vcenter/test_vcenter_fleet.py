"""vCenter with a fleet: two real ``avscan serve`` appliances (one per ESXi host of a real vcsim)
sharing one PostgreSQL. One appliance consumes vCenter's triggers at a time (advisory-lock
leadership, taken over when it is killed -9), a trigger makes one job, the job runs on the
appliance of the VM's host, a VM moved to another host (``RelocateVM_Task``: vcsim posts no
event, ``runtime.host`` changes) is placed there and its next job goes there, an event posted
while the watcher is frozen is taken by the next watcher from the shared cursor, and the shared
outbox is applied by one appliance."""

from __future__ import annotations

import inspect
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pyVmomi import vim
from support.service import Service

from scanner.fleet.leadership import VCENTER_WATCHER, leaders
from scanner.lab import eicar
from scanner.lab.vcsim import PASSWORD, USER, Vcsim
from scanner.vcenter.pgstore import PostgresVCenterStore
from scanner.vcenter.store import VCenterStore
from tests.support.postgres import PostgresServer, fresh_database, postgres
from tests.vcenter.sim import SimClient

__all__ = ["postgres"]
pytestmark = [pytest.mark.lab, pytest.mark.slow]
VM = "DC0_H0_VM0"  # starts on DC0_H0
HOSTS = {"a": "DC0_H0", "b": "DC0_C0_H0"}


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.close()


def wait_until(predicate, what: str, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def jobs(url: str) -> list[tuple[Any, ...]]:
    """(reason, host, state, ran by, scan hosts) of every vCenter job of the fleet, oldest first."""
    rows = query(url, "SELECT reason, host, state, lease_owner, scan_ids FROM vc_jobs ORDER BY seq")
    out = []
    for reason, host, state, owner, scan_ids in rows:
        hosts = query(url, "SELECT host FROM scans WHERE id = ANY(%s) ORDER BY seq", json.loads(scan_ids))
        out.append((reason, host, state, owner, [h for (h,) in hosts]))
    return out


def finished(url: str, n: int) -> list[tuple[Any, ...]] | None:
    """The jobs once there are ``n``, all ended, with nothing left in the outbox."""
    found = jobs(url)
    pending = query(url, "SELECT COUNT(*) FROM vc_actions WHERE state = 'PENDING'")[0][0]
    return found if len(found) == n and all(j[2] in ("DONE", "FAILED") for j in found) and not pending else None


def role_holder(url: str, role: str) -> str:
    """The appliance that holds a vCenter role (events, outbox) now, as PostgreSQL's locks say."""
    holders = [n.split()[1] for n in leaders_of(url) if f" leads vcenter-{role} " in n]
    assert len(holders) <= 1, f"two holders of vcenter-{role} at once: {holders}"
    return holders[0] if holders else ""


def watcher(url: str) -> str:
    return role_holder(url, "events")


def leaders_of(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(leaders(conn, VCENTER_WATCHER))


def relocate(sim: SimClient, name: str, host_name: str) -> None:
    hosts = sim.content.viewManager.CreateContainerView(sim.content.rootFolder, [vim.HostSystem], True).view
    target = next(h for h in hosts if h.name == host_name)
    sim.wait(sim.vm(name).RelocateVM_Task(vim.vm.RelocateSpec(host=target, pool=target.parent.resourcePool)))


def marked_vmem(path: Path) -> Path:
    """Flat guest RAM holding a marker."""
    path.write_bytes(bytes(1 << 20) + b"in guest memory: " + eicar() + bytes(3 << 20))
    return path


def appliance(tmp_path: Path, url: str, vcsim: Vcsim, name: str, host: str, fallback: str = "") -> Service:
    """``avscan serve`` for ESXi host ``host`` in the fleet of ``url``, with vCenter (dry run)."""
    os.environ["VC_PW"] = PASSWORD
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'[state]\nurl = "{url}"\n[fleet]\nhost = "{host}"\nname = "{name}"\n'
        f'lease_seconds = 2\npoll_seconds = 0.2\nfallback = "{fallback}"\n'
        f'[vcenter]\nurl = "{vcsim.url}"\nuser = "{USER}"\ninsecure = true\npassword_env = "VC_PW"\n'
        'poll_seconds = 1\n[vcenter.policy]\ntriggers = ["attribute", "migrate"]\ndedupe_seconds = 0\n'
        "scan_disks = false\ndry_run = true\n"
    )
    return Service(tmp_path / f"state-{name}", config)


def test_one_watcher_routes_each_trigger_to_the_vms_host_and_follows_a_move(
    vcsim: Vcsim, sim: SimClient, postgres: PostgresServer, services: list[Service], tmp_path: Path
) -> None:
    vmem = marked_vmem(tmp_path / "guest.vmem")
    for index in range(1, 7):
        sim.place_memory(VM, vmem, index)
    url = fresh_database(postgres)
    for name, host in HOSTS.items():
        services.append(appliance(tmp_path, url, vcsim, name, host))
    by_name = dict(zip(HOSTS, services, strict=True))
    wait_until(lambda: watcher(url), "a trigger watcher")
    wait_until(lambda: query(url, "SELECT host FROM placements WHERE guest LIKE 'vcenter:%%'"), "placements")

    sim.set_attribute(VM, "avscan.request", "please")
    [first] = wait_until(lambda: finished(url, 1), "the requested job")
    assert first[:4] == ("attribute", "DC0_H0", "DONE", "a"), "run by the appliance of the VM's host"
    assert first[4] == ["DC0_H0"], "its scan is a job of that host"
    assert sim.attributes(VM)["avscan.verdict"].startswith("MALICIOUS")

    relocate(sim, VM, "DC0_C0_H0")  # no event from vcsim: the move is seen in runtime.host
    moved = wait_until(lambda: finished(url, 2), "the job of the move")[1]
    assert moved[:4] == ("migrate", "DC0_C0_H0", "DONE", "b")
    assert moved[4] == ["DC0_C0_H0"]
    placed = query(url, "SELECT host FROM placements WHERE guest = %s", f"vcenter:{sim.uuid(VM)}")
    assert placed == [("DC0_C0_H0",)]

    applied = query(url, "SELECT DISTINCT applied_by FROM vc_actions WHERE state = 'DONE'")
    assert applied == [(role_holder(url, "outbox"),)], "one appliance applies the fleet's outbox"
    leader = watcher(url)
    survivor = "b" if leader == "a" else "a"
    if HOSTS[survivor] != "DC0_C0_H0":  # the VM's next jobs must have a live appliance after the kill
        relocate(sim, VM, HOSTS[survivor])
        wait_until(lambda: finished(url, 3), "the job of the second move")
    count = len(jobs(url))
    by_name[leader].proc.send_signal(signal.SIGSTOP)  # frozen: it holds the watcher's role, reads nothing
    sim.post_migrated(VM)  # an event no one reads: the next watcher must find it above the shared cursor
    by_name[leader].kill()  # -9: its session, and the watcher's lock with it, end
    wait_until(lambda: watcher(url) == survivor, "the watcher taken over")
    from_event = wait_until(lambda: finished(url, count + 1), "the job of the event")[-1]
    assert from_event[:4] == ("migrate", HOSTS[survivor], "DONE", survivor)
    assert query(url, "SELECT COUNT(*) FROM vc_jobs WHERE trigger_key LIKE 'event:%%'") == [(1,)]
    count += 1
    sim.set_attribute(VM, "avscan.request", "again")
    after = wait_until(lambda: finished(url, count + 1), "the job asked of the new watcher")
    assert after[-1][:4] == ("attribute", HOSTS[survivor], "DONE", survivor)
    assert sim.attributes(VM)["avscan.request"] == ""
    done = query(url, "SELECT kind, COUNT(*) FROM vc_actions WHERE state = 'DONE' GROUP BY kind")
    assert dict(done)["event"] == len(after), "every job's outcome reached vCenter"


def test_a_job_for_a_host_without_appliance_waits_then_falls_back_to_a_snapshot(
    vcsim: Vcsim, sim: SimClient, postgres: PostgresServer, services: list[Service], tmp_path: Path
) -> None:
    orphan = "DC0_C0_RP0_VM0"  # on DC0_C0_H1, where no appliance runs
    vmem = marked_vmem(tmp_path / "guest.vmem")
    for name in (VM, orphan):
        sim.place_memory(name, vmem)
    url = fresh_database(postgres)
    for name, host in HOSTS.items():  # neither falls back
        services.append(appliance(tmp_path, url, vcsim, name, host))
    wait_until(lambda: watcher(url), "a trigger watcher")
    sim.set_attribute(orphan, "avscan.request", "please")
    wait_until(lambda: len(jobs(url)) == 1, "the orphan's job")
    sim.set_attribute(VM, "avscan.request", "please")  # asked later, on a host with an appliance
    wait_until(lambda: [j for j in jobs(url) if j[2] == "DONE"], "the served VM's job")
    waiting = jobs(url)[0]
    assert waiting[:4] == ("attribute", "DC0_C0_H1", "QUEUED", None), "it waits: no appliance took it"

    services.append(appliance(tmp_path, url, vcsim, "c", "DC0_C0_H2", fallback="snapshot"))
    [ran, served] = wait_until(lambda: finished(url, 2), "the orphan's job through the fallback")
    assert ran[:4] == ("attribute", "DC0_C0_H1", "DONE", "c")
    assert ran[4] == ["DC0_C0_H2"], "one scan, of the downloaded snapshot, on the appliance that fell back"
    assert served[3] == "a"
    assert sim.attributes(orphan)["avscan.verdict"].startswith("MALICIOUS")


def test_the_fleet_store_has_every_method_of_the_appliance_store() -> None:
    public = {n for n, _ in inspect.getmembers(VCenterStore, inspect.isfunction) if not n.startswith("_")}
    for name in public:
        want = list(inspect.signature(getattr(VCenterStore, name)).parameters)
        got = list(inspect.signature(getattr(PostgresVCenterStore, name)).parameters)
        assert got[: len(want)] == want, name


def test_a_job_of_an_appliance_killed_mid_job_is_finished_once_by_its_hosts_other_appliance(
    vcsim: Vcsim, sim: SimClient, postgres: PostgresServer, services: list[Service], tmp_path: Path
) -> None:
    vmem = marked_vmem(tmp_path / "guest.vmem")
    for index in range(1, 4):
        sim.place_memory(VM, vmem, index)
    url = fresh_database(postgres)
    for name in ("a1", "a2"):  # two appliances of one ESXi host
        services.append(appliance(tmp_path, url, vcsim, name, "DC0_H0"))
    by_name = {"a1": services[0], "a2": services[1]}
    wait_until(lambda: watcher(url), "a trigger watcher")
    sim.set_attribute(VM, "avscan.request", "please")

    def holder() -> str:
        rows = query(url, "SELECT lease_owner FROM vc_jobs WHERE state <> 'QUEUED' AND lease_owner IS NOT NULL")
        return str(rows[0][0]) if rows else ""

    dead = wait_until(holder, "the job claimed")
    by_name[dead].proc.send_signal(signal.SIGSTOP)  # mid-job, then gone for good
    state = query(url, "SELECT state FROM vc_jobs")[0][0]
    by_name[dead].kill()
    other = "a2" if dead == "a1" else "a1"
    [job] = wait_until(lambda: finished(url, 1), "the job finished by the other appliance")
    assert state in ("ACQUIRING", "SCANNING", "PUBLISHING"), "killed while it ran"
    assert job[:4] == ("attribute", "DC0_H0", "DONE", other)
    assert sim.attributes(VM)["avscan.verdict"].startswith("MALICIOUS")
    assert sim.snapshots(VM) == [], "the dead appliance's acquisition snapshot removed on resume"
    kinds = [k for (k,) in query(url, "SELECT kind FROM vc_actions ORDER BY seq")]
    assert kinds.count("attributes") == 1 and kinds.count("request_ack") == 1
