"""vcsim and lab artifacts for the vCenter tests.

vcsim is built from Debian's govmomi source on first use (``scanner.lab.vcsim``); each test gets
its own vcsim on a free loopback port. When it cannot be built the tests skip with the reason,
except under ``CI=true`` where they fail. The guest memory placed on vcsim's datastore is the
RAM of a real lab guest (``LabGuest.dump_raw``), made once per session.

A test that takes ``state_url`` runs on both state backends: SQLite (the vCenter store in
``vcenter.sqlite3``) and PostgreSQL (the fleet's store, ``scanner.vcenter.pgstore``, with this
one appliance on vcsim's host ``DC0_H0``, where the VMs the tests use run).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scanner.app import App
from scanner.config import load_config
from scanner.errors import Unavailable
from scanner.fleet.settings import FleetSettings
from scanner.lab.pytest_plugin import lab_unavailable, start_or_skip
from scanner.lab.vcsim import PASSWORD, USER, Vcsim
from scanner.state.settings import StateSettings
from scanner.vcenter.settings import QuarantinePolicy, VCenterSettings
from tests.support.postgres import state_section
from tests.vcenter.sim import SimClient

HOST = "DC0_H0"  # vcsim's host of DC0_H0_VM0 and DC0_H0_VM1: on PostgreSQL, this appliance's


def service_state(url: str) -> str:
    """The ``[state]``/``[fleet]`` TOML of a service config for ``url`` (see ``state_url``)."""
    return state_section(url, host=HOST)


def vcsim_unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"vcsim cannot run under CI=true: {reason}")
    pytest.skip(f"vcsim cannot run: {reason}")


@pytest.fixture
def vcsim() -> Iterator[Vcsim]:
    try:
        sim = Vcsim.start()
    except Unavailable as e:
        vcsim_unavailable(e.message)
        raise
    with sim:
        yield sim


@pytest.fixture
def sim(vcsim: Vcsim) -> Iterator[SimClient]:
    client = SimClient(vcsim.port)
    yield client
    client.close()


@pytest.fixture(scope="session")
def lab_vmem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat ``.vmem``: the RAM of a 256 MiB lab guest whose marker process holds EICAR."""
    path = tmp_path_factory.mktemp("lab") / "guest.vmem"
    with start_or_skip(memory_mib=256, markers=1, variant="vc") as guest:
        guest.dump_raw(path)
    return path


DISK_MARKER = "/srv/drop/payload.com"  # where lab_vmdk's filesystem holds EICAR


@pytest.fixture(scope="session")
def lab_vmdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VMDK of an ext4 filesystem (``mkfs.ext4 -d``, then ``qemu-img convert -O vmdk``) that
    holds EICAR at :data:`DISK_MARKER` among clean files."""
    for tool in ("qemu-img", "mkfs.ext4"):
        if shutil.which(tool) is None:
            lab_unavailable(f"{tool} not found (apt-get install qemu-utils e2fsprogs)")
    from scanner.lab import eicar

    base = tmp_path_factory.mktemp("disk")
    tree = base / "tree"
    (tree / DISK_MARKER.lstrip("/")).parent.mkdir(parents=True)
    (tree / DISK_MARKER.lstrip("/")).write_bytes(b"dropped by the test: " + eicar())
    (tree / "etc").mkdir()
    (tree / "etc" / "hostname").write_text("vm0\n")
    raw = base / "disk.raw"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(raw), "16M"], check=True, capture_output=True)
    vmdk = base / "disk1.vmdk"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(vmdk)], check=True)
    return vmdk


def settings_for(sim: Vcsim, **policy: Any) -> VCenterSettings:
    defaults: dict[str, Any] = {"dedupe_seconds": 0.0}
    return VCenterSettings(
        url=sim.url,
        user=USER,
        password=PASSWORD,
        insecure=True,
        call_timeout=5.0,
        poll_seconds=1.0,
        policy=QuarantinePolicy(**{**defaults, **policy}),
    )


@asynccontextmanager
async def running_app(settings: VCenterSettings, state_dir: Path, url: str = "") -> AsyncIterator[App]:
    """The real service core (default ruleset, scan workers) with vCenter started, on SQLite under
    ``state_dir`` or, with ``url``, on that PostgreSQL as the appliance of :data:`HOST`."""
    fleet = FleetSettings(host=HOST, poll_seconds=0.2) if url else FleetSettings()
    config = replace(load_config(), state_dir=state_dir, vcenter=settings, state=StateSettings(url), fleet=fleet)
    app = App(config)
    await asyncio.to_thread(app.prepare)
    await app.scans.start()
    await app.start_vcenter()
    try:
        yield app
    finally:
        await app.stop_vcenter()
        await app.scans.shutdown(5)
        await asyncio.to_thread(app.close)
