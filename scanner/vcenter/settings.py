"""vCenter settings (the ``[vcenter]`` config table) and the quarantine policy.

Plain data, no pyvmomi: ``scanner.config`` builds these from TOML. The password is never in the
file; ``password_env`` names the environment variable holding it (``AVSCAN_VCENTER_PASSWORD`` by
default), and it is never logged or printed (``repr`` hides it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from scanner.errors import ConfigError

TRIGGERS = frozenset({"power_on", "migrate", "attribute"})
LADDER = ("tag", "disconnect", "snapshot", "suspend")
"""The quarantine ladder, mildest first: mark (attribute + tag), disconnect vNICs, forensic snapshot, suspend."""


@dataclass(frozen=True)
class QuarantinePolicy:
    """Which triggers start scans, and which ladder steps a finding's severity (0-100) earns.

    A step runs when the worst finding's severity is at least its threshold; 101 turns it off.
    Only MALICIOUS and SUSPICIOUS verdicts quarantine; INCOMPLETE and ERROR are published only.
    """

    triggers: frozenset[str] = TRIGGERS
    dry_run: bool = False
    tag_at: int = 1
    disconnect_at: int = 75
    snapshot_at: int = 90
    suspend_at: int = 101
    auto_release: bool = False  # a CLEAN rescan (memory scanned, nothing worse) of a quarantined VM releases it
    max_attempts: int = 5  # tries of an action vCenter refuses (a failed task) before it is FAILED; outages retry on
    scan_disks: bool = True  # when a "disk" target is available
    dedupe_seconds: float = 60.0  # one scan per VM for a burst of triggers
    per_host_limit: int = 2  # acquisitions at once on one ESXi host (scan storms)
    max_concurrent: int = 4  # vCenter scans in flight; the rest wait in the durable queue
    tag_category: str = "avscan"
    tag_name: str = "avscan-quarantine"
    forensic_retention_days: float = 30.0  # forensic snapshots older than this are removed; 0 keeps them

    def steps(self, severity: int) -> tuple[str, ...]:
        """The ladder steps for a finding of ``severity``, in order."""
        limits = {"tag": self.tag_at, "disconnect": self.disconnect_at, "snapshot": self.snapshot_at}
        limits["suspend"] = self.suspend_at
        return tuple(step for step in LADDER if severity >= limits[step])


@dataclass(frozen=True)
class VCenterSettings:
    """How to reach vCenter. ``url`` like ``https://vc.example.org/sdk`` (``http://`` for vcsim labs)."""

    url: str
    user: str
    password_env: str = "AVSCAN_VCENTER_PASSWORD"  # noqa: S105 - a variable name, not a secret
    password: str = field(default="", repr=False)  # set programmatically (tests, demo); never from TOML
    thumbprint: str = ""  # pin the server certificate: SHA-256 (or SHA-1) hex, colons optional
    insecure: bool = False  # labs only: no certificate verification at all
    ca_file: str = ""
    call_timeout: float = 30.0
    keepalive_seconds: float = 600.0
    poll_seconds: float = 1.0  # WaitForUpdatesEx max wait per round
    download_timeout: float = 600.0
    policy: QuarantinePolicy = field(default_factory=QuarantinePolicy)

    def secret(self) -> str:
        """The password: ``password`` if set, else the environment variable; ConfigError if none."""
        value = self.password or os.environ.get(self.password_env, "")
        if not value:
            raise ConfigError(f"vcenter.password_env: ${self.password_env} is not set")
        return value


def settings_from(raw: dict[str, Any]) -> VCenterSettings:
    """Validate a ``[vcenter]`` table (with an optional ``[vcenter.policy]``)."""
    allowed = {f for f in VCenterSettings.__dataclass_fields__ if f != "password"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"vcenter.{unknown[0]}: unknown key (allowed: {', '.join(sorted(allowed))})")
    for key in ("url", "user"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"vcenter.{key}: required when [vcenter] is set")
    if not raw["url"].startswith(("https://", "http://")):
        raise ConfigError("vcenter.url: must start with https:// (or http:// for a lab simulator)")
    if raw["url"].startswith("http://") and not raw.get("insecure", False):
        raise ConfigError("vcenter.url: plain http needs insecure = true (labs only)")
    policy_raw = raw.get("policy", {})
    if not isinstance(policy_raw, dict):
        raise ConfigError("vcenter.policy: must be a table")
    values = {k: v for k, v in raw.items() if k != "policy"}
    try:
        policy = _policy(policy_raw)
        settings = VCenterSettings(**values, policy=policy)
    except TypeError as e:
        raise ConfigError(f"[vcenter]: {e}") from e
    for name in ("call_timeout", "keepalive_seconds", "poll_seconds", "download_timeout"):
        if not isinstance(getattr(settings, name), (int, float)) or getattr(settings, name) <= 0:
            raise ConfigError(f"vcenter.{name}: must be a positive number")
    return settings


def _policy(raw: dict[str, Any]) -> QuarantinePolicy:
    allowed = set(QuarantinePolicy.__dataclass_fields__)
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"vcenter.policy.{unknown[0]}: unknown key (allowed: {', '.join(sorted(allowed))})")
    values = dict(raw)
    if "triggers" in values:
        triggers = frozenset(values["triggers"])
        if not triggers <= TRIGGERS:
            raise ConfigError(f"vcenter.policy.triggers: expected a subset of {sorted(TRIGGERS)}")
        values["triggers"] = triggers
    for key in ("tag_at", "disconnect_at", "snapshot_at", "suspend_at"):
        if key in values and not (isinstance(values[key], int) and 0 <= values[key] <= 101):
            raise ConfigError(f"vcenter.policy.{key}: must be an integer 0-101 (101 = never)")
    for key in ("per_host_limit", "max_concurrent", "max_attempts"):
        if key in values and not (isinstance(values[key], int) and values[key] >= 1):
            raise ConfigError(f"vcenter.policy.{key}: must be at least 1")
    return QuarantinePolicy(**values)
