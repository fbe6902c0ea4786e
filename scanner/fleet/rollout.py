"""Which appliance runs which ruleset: the fleet's active digest against each appliance's own.

Contract: :func:`rollout` reads, in one query, the fleet's active ruleset (the pointer's current
digest and its generation) and every registered appliance's ``ruleset_status`` row. An
appliance is ``current`` when it runs the active digest, ``failed`` when it could not activate
the digest it was asked for (its ``error`` says why; it runs its previous one), ``lagging`` when
it runs another digest without having failed on the active one (still compiling, stopped, or
not started since the pointer moved), and
``unknown`` when it never reported at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from scanner.state.postgres import PostgresDatabase


@dataclass(frozen=True)
class ApplianceRuleset:
    appliance: str
    host: str
    running: str
    wanted: str
    error: str
    state: str  # current | lagging | failed | unknown
    updated_at: float


@dataclass(frozen=True)
class Rollout:
    active: str  # the fleet's active digest ("" before any)
    version: int
    generation: int
    appliances: tuple[ApplianceRuleset, ...]


def rollout(db: PostgresDatabase) -> Rollout:
    with db.connection() as conn:
        pointer = conn.execute("SELECT doc, generation FROM ruleset_pointer WHERE id = 1").fetchone()
        rows = conn.execute(
            "SELECT a.name, a.host, s.digest, s.wanted_digest, s.error,"
            " extract(epoch FROM s.updated_at) FROM appliances a LEFT JOIN ruleset_status s ON s.appliance = a.name"
            " ORDER BY a.host, a.name"
        ).fetchall()
    active, version, generation = "", 0, 0
    if pointer is not None:
        current = json.loads(pointer[0])["current"]
        active, version, generation = str(current["digest"]), int(current["version"]), int(pointer[1])
    appliances = []
    for name, host, running, wanted, error, updated in rows:
        if running is None:
            state = "unknown"
        elif running == active:
            state = "current"
        elif error and wanted == active:
            state = "failed"
        else:
            state = "lagging"
        appliances.append(
            ApplianceRuleset(str(name), str(host), running or "", wanted or "", error or "", state, float(updated or 0))
        )
    return Rollout(active, version, generation, tuple(appliances))
