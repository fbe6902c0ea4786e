"""Appliances of a fleet and where guests run: registration, heartbeats, the fleet view, routing.

Contract:
- ``register`` records this appliance (name, hypervisor host) as started; ``heartbeat`` renews
  it with what it runs; ``deregister`` marks it stopped. An appliance is *alive* when it is not
  stopped and its last heartbeat is younger than ``dead_after`` seconds, by PostgreSQL's clock
  (appliances' clocks never have to agree).
- ``place(guest, host)`` records where a guest runs now (a migration moves it); ``host_for(spec)``
  routes a scan: the placed host of the guest it names, else this appliance's own host (a file
  or image path means something only where it was given).
"""

from __future__ import annotations

from dataclasses import dataclass

from scanner.state.postgres import PostgresDatabase
from scanner.targets.base import TargetSpec


@dataclass(frozen=True)
class ApplianceInfo:
    name: str
    host: str
    started_at: float
    heartbeat_at: float
    running: int
    ruleset_digest: str
    alive: bool


def guest_key(spec: TargetSpec) -> str:
    """The identity of the guest a target names ("" for a plain file or image)."""
    domain = spec.params.get("domain") if spec.kind == "guest" else None
    return f"domain:{domain}" if isinstance(domain, str) and domain else ""


class Registry:
    def __init__(self, db: PostgresDatabase, dead_after: float = 90.0) -> None:
        self.db = db
        self.dead_after = dead_after

    def register(self) -> None:
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO appliances (name, host, started_at, heartbeat_at) VALUES (%s, %s, now(), now())"
                " ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, started_at = now(), heartbeat_at = now(),"
                " running = 0, stopped = FALSE",
                (self.db.appliance, self.db.host),
            )

    def heartbeat(self, running: int, ruleset_digest: str) -> None:
        with self.db.connection() as conn:
            conn.execute(
                "UPDATE appliances SET heartbeat_at = now(), running = %s, ruleset_digest = %s WHERE name = %s",
                (running, ruleset_digest, self.db.appliance),
            )

    def deregister(self) -> None:
        with self.db.connection() as conn:
            conn.execute("UPDATE appliances SET stopped = TRUE, running = 0 WHERE name = %s", (self.db.appliance,))

    def fleet(self) -> list[ApplianceInfo]:
        """Every appliance that ever registered, by host then name."""
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT name, host, extract(epoch FROM started_at), extract(epoch FROM heartbeat_at), running,"
                " ruleset_digest, NOT stopped AND heartbeat_at > now() - make_interval(secs => %s)"
                " FROM appliances ORDER BY host, name",
                (self.dead_after,),
            ).fetchall()
        return [ApplianceInfo(r[0], r[1], float(r[2]), float(r[3]), r[4], r[5], bool(r[6])) for r in rows]

    def place(self, guest: str, host: str) -> None:
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO placements (guest, host, updated_at) VALUES (%s, %s, now())"
                " ON CONFLICT (guest) DO UPDATE SET host = EXCLUDED.host, updated_at = now()",
                (guest, host),
            )

    def host_for(self, spec: TargetSpec) -> str:
        guest = guest_key(spec)
        if guest:
            with self.db.connection() as conn:
                row = conn.execute("SELECT host FROM placements WHERE guest = %s", (guest,)).fetchone()
            if row is not None:
                return str(row[0])
        return self.db.host
