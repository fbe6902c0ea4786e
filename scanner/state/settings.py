"""``[state]`` in the config: where the durable state lives."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StateSettings:
    """``url`` empty: SQLite under ``state_dir`` (one appliance). ``url =
    "postgresql://user@host:port/db"``: the fleet's shared PostgreSQL (scans, findings, audit and
    the job queue; the password, if any, from ``PGPASSWORD`` or ``~/.pgpass``, never the file)."""

    url: str = ""

    def __post_init__(self) -> None:
        if self.url and not self.url.startswith(("postgresql://", "postgres://")):
            raise ValueError("state.url must be a postgresql:// URL")
