"""Configuration: an optional TOML file, defaults that run on a fresh machine.

Every key is optional. A wrong key or value raises :class:`ConfigError` naming it, before the
service binds a port. Without TLS the service only listens on loopback.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from scanner.engine.cache import CacheSettings
from scanner.engine.settings import EngineSettings, MiB
from scanner.errors import ConfigError
from scanner.fleet.settings import FleetSettings
from scanner.state.settings import StateSettings
from scanner.targets.files import FilePolicy
from scanner.vcenter.settings import VCenterSettings, settings_from

ROLES = frozenset({"reader", "operator", "publisher"})
DEFAULT_SIGNATURES = Path(__file__).resolve().parent.parent / "signatures"


@dataclass(frozen=True)
class TokenGrant:
    """A bearer token (stored as its sha256) and what its holder may do."""

    name: str
    sha256: str
    roles: frozenset[str]


@dataclass(frozen=True)
class TLSConfig:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: clients must present a certificate signed by it


@dataclass(frozen=True)
class Config:
    listen: str = "127.0.0.1:50051"
    reflection: bool = True
    tls: TLSConfig | None = None
    tokens: tuple[TokenGrant, ...] = ()
    state_dir: Path = Path(os.environ.get("AVSCAN_STATE_DIR", "var"))
    signatures_dir: Path = DEFAULT_SIGNATURES
    engine: EngineSettings = field(default_factory=EngineSettings)
    files: FilePolicy = field(default_factory=FilePolicy)
    cache: CacheSettings = field(default_factory=CacheSettings)
    max_concurrent_scans: int = 2
    shutdown_grace: float = 10.0
    max_upload_bytes: int = 64 * MiB
    vcenter: VCenterSettings | None = None  # [vcenter]: triggers, verdicts and quarantine in vCenter
    state: StateSettings = field(default_factory=StateSettings)  # [state] url: the fleet's PostgreSQL
    fleet: FleetSettings = field(default_factory=FleetSettings)  # [fleet]: this appliance's host

    @property
    def open_local(self) -> bool:
        """No TLS and no tokens: loopback callers get every role (like a local admin socket)."""
        return self.tls is None and not self.tokens


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Read ``path`` (TOML) if given, apply keyword overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except OSError as e:
            raise ConfigError(f"config file {path}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path}: {e}") from e
    config = _from_dict(raw)
    config = replace(config, **overrides)
    _validate(config)
    return config


def _from_dict(raw: dict[str, Any]) -> Config:
    known = {"server", "auth", "state_dir", "signatures_dir", "engine", "files", "jobs", "limits", "cache", "vcenter"}
    known |= {"state", "fleet"}
    _no_unknown("", raw, known)
    server = _table(raw, "server", {"listen", "reflection", "tls"})
    kwargs: dict[str, Any] = {}
    if "listen" in server:
        kwargs["listen"] = _typed("server.listen", server["listen"], str)
    if "reflection" in server:
        kwargs["reflection"] = _typed("server.reflection", server["reflection"], bool)
    if "tls" in server:
        kwargs["tls"] = _tls(server["tls"])
    auth = _table(raw, "auth", {"tokens"})
    kwargs["tokens"] = tuple(_token(i, t) for i, t in enumerate(auth.get("tokens", [])))
    for key in ("state_dir", "signatures_dir"):
        if key in raw:
            kwargs[key] = Path(_typed(key, raw[key], str))
    kwargs["engine"] = _section(raw, "engine", EngineSettings)
    kwargs["files"] = _section(raw, "files", FilePolicy)
    kwargs["cache"] = _section(raw, "cache", CacheSettings)
    kwargs["state"] = _section(raw, "state", StateSettings)
    kwargs["fleet"] = _section(raw, "fleet", FleetSettings)
    jobs = _table(raw, "jobs", {"max_concurrent_scans", "shutdown_grace"})
    if "max_concurrent_scans" in jobs:
        kwargs["max_concurrent_scans"] = _typed("jobs.max_concurrent_scans", jobs["max_concurrent_scans"], int)
    if "shutdown_grace" in jobs:
        kwargs["shutdown_grace"] = float(_typed("jobs.shutdown_grace", jobs["shutdown_grace"], (int, float)))
    limits = _table(raw, "limits", {"max_upload_bytes"})
    if "max_upload_bytes" in limits:
        kwargs["max_upload_bytes"] = _typed("limits.max_upload_bytes", limits["max_upload_bytes"], int)
    if "vcenter" in raw:
        if not isinstance(raw["vcenter"], dict):
            raise ConfigError("vcenter: must be a table")
        kwargs["vcenter"] = settings_from(raw["vcenter"])
    return Config(**kwargs)


def _section(raw: dict[str, Any], name: str, cls: Any) -> Any:
    table = _table(raw, name, {f.name for f in fields(cls)})
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[{name}]: {e}") from e


def _tls(raw: Any) -> TLSConfig:
    if not isinstance(raw, dict):
        raise ConfigError("server.tls: must be a table")
    _no_unknown("server.tls", raw, {"cert", "key", "client_ca"})
    for key in ("cert", "key"):
        if key not in raw:
            raise ConfigError(f"server.tls.{key}: required when [server.tls] is set")
    ca = raw.get("client_ca")
    return TLSConfig(Path(raw["cert"]), Path(raw["key"]), Path(ca) if ca else None)


def _token(index: int, raw: Any) -> TokenGrant:
    where = f"auth.tokens[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    _no_unknown(where, raw, {"name", "sha256", "roles"})
    digest = _typed(f"{where}.sha256", raw.get("sha256", ""), str).lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError(f"{where}.sha256: must be the hex sha256 of the token")
    roles = frozenset(raw.get("roles", []))
    if not roles or not roles <= ROLES:
        raise ConfigError(f"{where}.roles: must be a non-empty subset of {sorted(ROLES)}")
    return TokenGrant(str(raw.get("name", f"token{index}")), digest, roles)


def _validate(config: Config) -> None:
    host = config.listen.rsplit(":", 1)[0].strip("[]")
    if config.tls is None and not _is_loopback(host):
        raise ConfigError(f"server.listen: {config.listen} is not loopback; configure [server.tls] first")
    if config.max_concurrent_scans < 1:
        raise ConfigError("jobs.max_concurrent_scans: must be at least 1")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _table(raw: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: must be a table")
    _no_unknown(name, table, allowed)
    return table


def _no_unknown(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (allowed: {', '.join(sorted(allowed))})")


def _typed(where: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: wrong type {type(value).__name__}")
    return value
