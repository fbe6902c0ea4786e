"""Configuration: an optional TOML file, defaults that run on a fresh machine.

Every key is optional. A wrong key or value raises :class:`ConfigError` naming it, before the
service binds a port. Without TLS the service only listens on loopback.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from scanner.engine.cache import CacheSettings
from scanner.engine.settings import EngineSettings, MiB
from scanner.errors import ConfigError
from scanner.fleet.settings import FleetSettings
from scanner.jobs.settings import JobLimits
from scanner.rulesets.signing import TrustedKeys, public_key_bytes
from scanner.state.settings import StateSettings
from scanner.targets.files import FilePolicy
from scanner.vcenter.settings import VCenterSettings, settings_from

ROLES = frozenset({"reader", "operator", "publisher"})
DEFAULT_SIGNATURES = Path(__file__).resolve().parent.parent / "signatures"


SYSTEM_CONFIG = Path("/etc/avscan/avscan.toml")
SYSTEM_STATE = Path("/var/lib/avscan")


def default_state_dir() -> Path:
    """``$AVSCAN_STATE_DIR``; else ``/var/lib/avscan`` as root; else the XDG state directory
    (``$XDG_STATE_HOME/avscan``, by default ``~/.local/state/avscan``)."""
    env = os.environ.get("AVSCAN_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return SYSTEM_STATE
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "avscan"


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
    state_dir: Path = field(default_factory=default_state_dir)
    signatures_dir: Path = DEFAULT_SIGNATURES
    engine: EngineSettings = field(default_factory=EngineSettings)
    files: FilePolicy = field(default_factory=FilePolicy)
    cache: CacheSettings = field(default_factory=CacheSettings)
    max_concurrent_scans: int = 2
    shutdown_grace: float = 10.0
    jobs: JobLimits = field(default_factory=JobLimits)  # [jobs] cancel_grace, stall_timeout, ...
    trusted_keys: TrustedKeys = field(default_factory=TrustedKeys)  # [signatures] trusted_keys
    rule_probe_seconds: float = 5.0  # [signatures] a pushed ruleset's budget on the 16 MiB reference buffer
    max_ruleset_bytes: int = 64 * MiB  # [signatures] largest ruleset this appliance compiles (all files)
    max_upload_bytes: int = 64 * MiB
    vcenter: VCenterSettings | None = None  # [vcenter]: triggers, verdicts and quarantine in vCenter
    event_sinks: tuple[Mapping[str, Any], ...] = ()  # [[events.sinks]]: where ECS documents go
    metrics_listen: str = ""  # [server] metrics_listen: host:port of the Prometheus /metrics endpoint
    log_format: str = "text"  # [logging] format: text or json (ECS)
    log_level: str = "INFO"  # [logging] level
    state: StateSettings = field(default_factory=StateSettings)  # [state] url: the fleet's PostgreSQL
    fleet: FleetSettings = field(default_factory=FleetSettings)  # [fleet]: this appliance's host

    @property
    def open_local(self) -> bool:
        """No TLS and no tokens: loopback callers get every role (like a local admin socket)."""
        return self.tls is None and not self.tokens


TOP_KEYS = {"server", "auth", "state_dir", "signatures_dir", "engine", "files", "jobs", "limits", "cache", "vcenter",
            "events", "logging", "signatures", "state", "fleet"}
SERVER_KEYS = {"listen", "reflection", "tls", "metrics_listen"}
TLS_KEYS = {"cert", "key", "client_ca"}
TOKEN_KEYS = {"name", "sha256", "roles"}
JOBS_KEYS = {"max_concurrent_scans", "shutdown_grace"}
LIMITS_KEYS = {"max_upload_bytes"}
LOGGING_KEYS = {"format", "level"}


def accepted_keys() -> set[str]:
    """Every dotted key a config file may set (arrays of tables by their array's name), for the
    documentation check: ``deploy/avscan.toml`` must mention each one."""
    from scanner.outputs.sinks import REGISTRY
    from scanner.vcenter.settings import QuarantinePolicy, VCenterSettings

    keys = {k for k in TOP_KEYS if k in ("state_dir", "signatures_dir")}
    keys |= {f"server.{k}" for k in SERVER_KEYS - {"tls"}} | {f"server.tls.{k}" for k in TLS_KEYS}
    keys |= {f"auth.tokens.{k}" for k in TOKEN_KEYS} | {f"jobs.{k}" for k in JOBS_KEYS}
    keys |= {f"limits.{k}" for k in LIMITS_KEYS} | {f"logging.{k}" for k in LOGGING_KEYS}
    keys |= {f"jobs.{f.name}" for f in fields(JobLimits)}
    keys |= {"signatures.trusted_keys.id", "signatures.trusted_keys.public_key", "signatures.slow_rule_seconds",
             "signatures.max_ruleset_bytes"}
    for section, cls in (("engine", EngineSettings), ("files", FilePolicy), ("cache", CacheSettings),
                         ("state", StateSettings), ("fleet", FleetSettings)):  # fmt: skip
        keys |= {f"{section}.{f.name}" for f in fields(cls)}
    keys |= {f"vcenter.{f}" for f in VCenterSettings.__dataclass_fields__ if f not in ("password", "policy")}
    keys |= {f"vcenter.policy.{f}" for f in QuarantinePolicy.__dataclass_fields__}
    keys |= {"events.sinks.kind", "events.sinks.name"}
    for kind in REGISTRY:
        keys |= {f"events.sinks.{k}" for k in _sink_keys(kind)}
    return keys


def _sink_keys(kind: str) -> set[str]:
    from scanner.outputs.sinks import REGISTRY

    try:
        REGISTRY[kind]("probe", {"probe_unknown_key": 1})
    except ConfigError as e:
        allowed = e.message.split("(allowed: ", 1)[1].rstrip(")")
        return {k.strip() for k in allowed.split(",")}
    return set()


def default_config_path() -> Path | None:
    """The config file used without ``--config``: ``$AVSCAN_CONFIG`` (must exist), else
    ``/etc/avscan/avscan.toml`` if present, else none (built-in defaults)."""
    env = os.environ.get("AVSCAN_CONFIG")
    if env:
        if not Path(env).is_file():
            raise ConfigError(f"AVSCAN_CONFIG: {env}: no such file")
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


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
    _no_unknown("", raw, TOP_KEYS)
    server = _table(raw, "server", SERVER_KEYS)
    kwargs: dict[str, Any] = {}
    if "metrics_listen" in server:
        kwargs["metrics_listen"] = _typed("server.metrics_listen", server["metrics_listen"], str)
    kwargs.update(_events_and_logging(raw))
    if "listen" in server:
        kwargs["listen"] = _typed("server.listen", server["listen"], str)
    if "reflection" in server:
        kwargs["reflection"] = _typed("server.reflection", server["reflection"], bool)
    if "tls" in server:
        kwargs["tls"] = _tls(server["tls"])
    auth = _table(raw, "auth", {"tokens"})  # auth.tokens: an array of TOKEN_KEYS tables
    kwargs["tokens"] = tuple(_token(i, t) for i, t in enumerate(auth.get("tokens", [])))
    for key in ("state_dir", "signatures_dir"):
        if key in raw:
            kwargs[key] = Path(_typed(key, raw[key], str))
    kwargs["engine"] = _section(raw, "engine", EngineSettings)
    kwargs["files"] = _section(raw, "files", FilePolicy)
    kwargs["cache"] = _section(raw, "cache", CacheSettings)
    kwargs["state"] = _section(raw, "state", StateSettings)
    kwargs["fleet"] = _section(raw, "fleet", FleetSettings)
    limits_keys = {f.name for f in fields(JobLimits)}
    jobs = _table(raw, "jobs", JOBS_KEYS | limits_keys)
    try:
        kwargs["jobs"] = JobLimits(**{k: v for k, v in jobs.items() if k in limits_keys})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[jobs]: {e}") from e
    if "max_concurrent_scans" in jobs:
        kwargs["max_concurrent_scans"] = _typed("jobs.max_concurrent_scans", jobs["max_concurrent_scans"], int)
    if "shutdown_grace" in jobs:
        kwargs["shutdown_grace"] = float(_typed("jobs.shutdown_grace", jobs["shutdown_grace"], (int, float)))
    limits = _table(raw, "limits", LIMITS_KEYS)
    if "max_upload_bytes" in limits:
        kwargs["max_upload_bytes"] = _typed("limits.max_upload_bytes", limits["max_upload_bytes"], int)
    kwargs.update(_signatures(raw))
    if "vcenter" in raw:
        if not isinstance(raw["vcenter"], dict):
            raise ConfigError("vcenter: must be a table")
        kwargs["vcenter"] = settings_from(raw["vcenter"])
    _consistent(kwargs)
    return Config(**kwargs)


def _consistent(kwargs: Mapping[str, Any]) -> None:
    """Settings that each parse but do not work together."""
    # [[events.sinks]] with [state] url: the fleet relays from PostgreSQL (scanner.outputs.pgqueue)


def _events_and_logging(raw: dict[str, Any]) -> dict[str, Any]:
    from scanner.outputs.sinks import build_sink

    kwargs: dict[str, Any] = {}
    events = _table(raw, "events", {"sinks"})
    sinks = events.get("sinks", [])
    if not isinstance(sinks, list):
        raise ConfigError("events.sinks: must be an array of tables ([[events.sinks]])")
    names = [build_sink(i, table).name for i, table in enumerate(sinks)]  # validates every key now
    if len(set(names)) != len(names):
        raise ConfigError("events.sinks: two sinks have the same name")
    kwargs["event_sinks"] = tuple(sinks)
    logging_ = _table(raw, "logging", LOGGING_KEYS)
    if "format" in logging_:
        kwargs["log_format"] = _typed("logging.format", logging_["format"], str)
    if "level" in logging_:
        kwargs["log_level"] = _typed("logging.level", logging_["level"], str).upper()
    return kwargs


def _signatures(raw: dict[str, Any]) -> dict[str, Any]:
    """``[signatures]``: ``trusted_keys = [{id = "...", public_key = "<base64 or PEM path>"}]``
    (any key makes signed pushes mandatory) and ``slow_rule_seconds`` (the probe budget)."""
    table = _table(raw, "signatures", {"trusted_keys", "slow_rule_seconds", "max_ruleset_bytes"})
    out: dict[str, Any] = {}
    keys: list[tuple[str, bytes]] = []
    for i, entry in enumerate(table.get("trusted_keys", [])):
        where = f"signatures.trusted_keys[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a table")
        _no_unknown(where, entry, {"id", "public_key"})
        key_id = _typed(f"{where}.id", entry.get("id", ""), str)
        if not key_id or key_id in {k for k, _ in keys}:
            raise ConfigError(f"{where}.id: required and unique")
        keys.append(
            (
                key_id,
                public_key_bytes(
                    f"{where}.public_key", _typed(f"{where}.public_key", entry.get("public_key", ""), str)
                ),
            )
        )
    out["trusted_keys"] = TrustedKeys(tuple(keys))
    if "slow_rule_seconds" in table:
        seconds = float(_typed("signatures.slow_rule_seconds", table["slow_rule_seconds"], (int, float)))
        if seconds <= 0:
            raise ConfigError("signatures.slow_rule_seconds: must be positive")
        out["rule_probe_seconds"] = seconds
    if "max_ruleset_bytes" in table:
        size = _typed("signatures.max_ruleset_bytes", table["max_ruleset_bytes"], int)
        if size <= 0:
            raise ConfigError("signatures.max_ruleset_bytes: must be positive")
        out["max_ruleset_bytes"] = size
    return out


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
    _no_unknown("server.tls", raw, TLS_KEYS)
    for key in ("cert", "key"):
        if key not in raw:
            raise ConfigError(f"server.tls.{key}: required when [server.tls] is set")
    ca = raw.get("client_ca")
    return TLSConfig(Path(raw["cert"]), Path(raw["key"]), Path(ca) if ca else None)


def _token(index: int, raw: Any) -> TokenGrant:
    where = f"auth.tokens[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    _no_unknown(where, raw, TOKEN_KEYS)
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
    if config.log_format not in ("text", "json"):
        raise ConfigError("logging.format: must be text or json")
    if config.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("logging.level: one of DEBUG, INFO, WARNING, ERROR")
    if config.metrics_listen:
        mhost, _, mport = config.metrics_listen.rpartition(":")
        if not mport.isdigit() or not mhost:
            raise ConfigError(f"server.metrics_listen: {config.metrics_listen} is not host:port")
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
