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
    once through NOTIFY)."""

    host: str = ""
    name: str = ""
    lease_seconds: float = 30.0
    poll_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.lease_seconds <= 3600.0:
            raise ValueError("fleet.lease_seconds must be between 1 and 3600")
        if not 0.05 <= self.poll_seconds <= self.lease_seconds:
            raise ValueError("fleet.poll_seconds must be between 0.05 and fleet.lease_seconds")

    @property
    def host_identity(self) -> str:
        return self.host or socket.gethostname()

    @property
    def appliance(self) -> str:
        return self.name or self.host_identity
