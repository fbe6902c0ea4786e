"""Scan a disk target and reduce the verdict to what the tests compare."""

from __future__ import annotations

from typing import Any

from scanner.targets import FilePolicy, TargetSpec, build_target
from scanner.verdicts import Verdict


def scan(engine: Any, ruleset: Any, policy: FilePolicy | None = None, **params: str) -> Verdict:
    with build_target(TargetSpec("disk", params), policy) as target:
        return engine.scan(ruleset, target)


def found(verdict: Verdict) -> set[tuple[str, str]]:
    """(rule, path inside the guest) per finding."""
    return {(f.rule, f.context["path"]) for f in verdict.findings}
