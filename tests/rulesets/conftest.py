"""Fixtures for the signature store tests: a store in a temp dir and an audit recorder."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.rulesets.store import RulesetStore

REPO = Path(__file__).resolve().parents[2]
SIGNATURES = REPO / "signatures"


class AuditLog:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, str, str]] = []

    def __call__(self, actor: str, action: str, subject: str, detail: str) -> None:
        self.records.append((actor, action, subject, detail))

    def actions(self) -> list[str]:
        return [r[1] for r in self.records]


@pytest.fixture
def audit() -> AuditLog:
    return AuditLog()


@pytest.fixture
def store(tmp_path: Path, audit: AuditLog) -> RulesetStore:
    return RulesetStore(tmp_path / "store", audit=audit)
