"""``[fleet]`` in the config: who this appliance is in a fleet sharing one PostgreSQL state."""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class FleetSettings:
    """``host``: the hypervisor host this appliance reads guests on (vCenter host moref, libvirt
    URI or host name; default the host name); it takes only jobs for that host. ``name``: this
    appliance in the fleet view (default: ``host``). A running job's lease lasts ``lease_seconds``
    and is renewed every third of it; a dead appliance's jobs are taken over when it expires.
    ``poll_seconds``: how often an idle appliance looks for expired leases (new jobs wake it at
    once through NOTIFY). ``fallback``: what becomes of a vCenter job whose VM's host has no live
    appliance: ``""`` (default) it waits for one; ``"snapshot"``: any appliance of the fleet with
    ``[vcenter]`` runs it through a vCenter snapshot (the VM's memory downloaded from the
    datastore). Scans of live guests (libvirt, QEMU) always wait for their host's appliance."""

    host: str = ""
    name: str = ""
    lease_seconds: float = 30.0
    poll_seconds: float = 5.0
    fallback: str = ""

    def __post_init__(self) -> None:
        if not 1.0 <= self.lease_seconds <= 3600.0:
            raise ValueError("fleet.lease_seconds must be between 1 and 3600")
        if not 0.05 <= self.poll_seconds <= self.lease_seconds:
            raise ValueError("fleet.poll_seconds must be between 0.05 and fleet.lease_seconds")
        if self.fallback not in ("", "snapshot"):
            raise ValueError(f'fleet.fallback must be "" or "snapshot", not {self.fallback!r}')

    @property
    def host_identity(self) -> str:
        return self.host or socket.gethostname()

    @property
    def appliance(self) -> str:
        return self.name or self.host_identity
