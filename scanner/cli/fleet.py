"""``avscan fleet``: the appliances sharing this config's PostgreSQL state, read from the database."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from scanner.config import Config
from scanner.errors import ScannerError

if TYPE_CHECKING:
    from scanner.fleet.registry import ApplianceInfo
    from scanner.fleet.rollout import Rollout


def fleet_lines(config: Config) -> list[str]:
    """One line per registered appliance: name, host, alive or not, running scans, ruleset, heartbeat age."""
    from scanner.fleet.registry import Registry
    from scanner.fleet.rollout import rollout
    from scanner.state.postgres import PostgresDatabase

    if not config.state.url:
        raise click.ClickException("fleet: the config has no [state] url: this appliance is not part of a fleet")
    settings = config.fleet
    try:
        db = PostgresDatabase(config.state.url, settings.host_identity, settings.appliance, settings.lease_seconds)
    except ScannerError as e:
        raise click.ClickException(f"fleet: {e.message}") from e
    try:
        appliances = Registry(db, dead_after=3 * settings.lease_seconds).fleet()
        signatures = rollout(db)
    except ScannerError as e:
        raise click.ClickException(f"fleet: {e.message}") from e
    finally:
        db.close()
    return _lines(appliances, signatures)


def _lines(appliances: list[ApplianceInfo], signatures: Rollout) -> list[str]:
    """One line per appliance; its ruleset is the one it reported running (else its heartbeat's),
    then whether that is the fleet's active one (current, lagging, failed: why, unknown)."""
    status = {a.appliance: a for a in signatures.appliances}
    lines = [f"{'APPLIANCE':<20} {'HOST':<24} {'STATE':<6} {'RUNNING':>7} {'HEARTBEAT':>9}  {'RULESET':<71} SIGNATURES"]
    for a in appliances:
        age = f"{max(0.0, time.time() - a.heartbeat_at):.0f}s ago"
        state = "alive" if a.alive else "down"
        own = status.get(a.name)
        running = (own.running if own is not None else "") or a.ruleset_digest or "-"
        following = own.state if own is not None else "unknown"
        if own is not None and own.state == "failed":
            following = f"failed: keeps its previous ruleset; {own.wanted} did not activate: {own.error}"
        lines.append(f"{a.name:<20} {a.host:<24} {state:<6} {a.running:>7} {age:>9}  {running:<71} {following}")
    active = f"{signatures.active} (version {signatures.version})" if signatures.active else "none"
    lines.append(f"fleet ruleset: {active}")
    return lines
