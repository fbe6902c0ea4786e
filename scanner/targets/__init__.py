"""Targets by kind. Adding one = a module + one line in ``build_target``'s table + tests."""

from __future__ import annotations

from collections.abc import Callable

from scanner.errors import InvalidArgument
from scanner.targets.base import Skipped, Target, TargetSpec, Unit
from scanner.targets.files import FilePolicy


def _files(spec: TargetSpec, policy: FilePolicy) -> Target:
    from scanner.targets.files import FileTarget

    return FileTarget.from_params(spec.params, policy)


def _memory(spec: TargetSpec, policy: FilePolicy) -> Target:
    from scanner.targets.memory import MemoryTarget

    return MemoryTarget.from_params(spec.params)


def _guest(spec: TargetSpec, policy: FilePolicy) -> Target:
    from scanner.targets.guest import GuestTarget

    return GuestTarget.from_params(spec.params)


def _disk(spec: TargetSpec, policy: FilePolicy) -> Target:
    from scanner.targets.disk import DiskTarget

    return DiskTarget.from_params(spec.params, policy)


REGISTRY: dict[str, Callable[[TargetSpec, FilePolicy], Target]] = {
    "files": _files,
    "memory": _memory,
    "guest": _guest,
    "disk": _disk,
}


def build_target(spec: TargetSpec, policy: FilePolicy | None = None) -> Target:
    """The target for ``spec``; raises InvalidArgument naming the field for a bad spec."""
    try:
        factory = REGISTRY[spec.kind]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise InvalidArgument("target.kind", f"unknown target {spec.kind!r} (known: {known})") from None
    return factory(spec, policy or FilePolicy())


__all__ = ["REGISTRY", "FilePolicy", "Skipped", "Target", "TargetSpec", "Unit", "build_target"]
