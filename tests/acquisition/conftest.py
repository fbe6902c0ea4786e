"""Fixtures for the acquisition tests: the lab guest (real QEMU) and the shipped signatures."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.lab.pytest_plugin import lab_guest, start_lab_guest
from scanner.rulesets import LoadedRuleset, compile_path

SIGNATURES = Path(__file__).resolve().parents[2] / "signatures"


@pytest.fixture(scope="session")
def rules() -> LoadedRuleset:
    return compile_path(SIGNATURES)


__all__ = ["lab_guest", "rules", "start_lab_guest"]
