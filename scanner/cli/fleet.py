"""``avscan fleet``: the appliances sharing this config's PostgreSQL state, read from the database."""

from __future__ import annotations

import time

import click

from scanner.config import Config
from scanner.errors import ScannerError


def fleet_lines(config: Config) -> list[str]:
    """One line per registered appliance: name, host, alive or not, running scans, ruleset, heartbeat age."""
    from scanner.fleet.registry import Registry
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
    finally:
        db.close()
    lines = [f"{'APPLIANCE':<20} {'HOST':<24} {'STATE':<6} {'RUNNING':>7} {'HEARTBEAT':>9}  RULESET"]
    for a in appliances:
        age = f"{max(0.0, time.time() - a.heartbeat_at):.0f}s ago"
        state = "alive" if a.alive else "down"
        lines.append(f"{a.name:<20} {a.host:<24} {state:<6} {a.running:>7} {age:>9}  {a.ruleset_digest or '-'}")
    return lines
