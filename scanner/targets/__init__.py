"""Targets by kind. Adding one = a module + one line in ``build_target``'s table + tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scanner.errors import InvalidArgument
from scanner.targets.base import Skipped, Target, TargetSpec, Unit
from scanner.targets.files import FilePolicy


@dataclass(frozen=True)
class TargetEnv:
    """What the appliance gives every target: file policy, where kernel profiles are cached."""

    policy: FilePolicy = field(default_factory=FilePolicy)
    profile_cache: Path | None = None


def _files(spec: TargetSpec, env: TargetEnv) -> Target:
    from scanner.targets.files import FileTarget

    return FileTarget.from_params(spec.params, env.policy)


def _memory(spec: TargetSpec, env: TargetEnv) -> Target:
    from scanner.targets.awareness import memory_view
    from scanner.targets.memory import open_source

    return memory_view(open_source(spec.params), spec.params, env.profile_cache)


def _guest(spec: TargetSpec, env: TargetEnv) -> Target:
    from scanner.targets.guest import GuestTarget

    return GuestTarget.from_params(spec.params, env.profile_cache)


def _disk(spec: TargetSpec, env: TargetEnv) -> Target:
    from scanner.targets.disk import DiskTarget

    return DiskTarget.from_params(spec.params, env.policy)


REGISTRY: dict[str, Callable[[TargetSpec, TargetEnv], Target]] = {
    "files": _files,
    "memory": _memory,
    "guest": _guest,
    "disk": _disk,
}


def build_target(spec: TargetSpec, policy: FilePolicy | None = None, profile_cache: Path | None = None) -> Target:
    """The target for ``spec``; raises InvalidArgument naming the field for a bad spec."""
    try:
        factory = REGISTRY[spec.kind]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise InvalidArgument("target.kind", f"unknown target {spec.kind!r} (known: {known})") from None
    return factory(spec, TargetEnv(policy or FilePolicy(), profile_cache))


__all__ = ["REGISTRY", "FilePolicy", "Skipped", "Target", "TargetEnv", "TargetSpec", "Unit", "build_target"]
