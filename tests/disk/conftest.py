"""Disk fixtures: the sample tree, the rules, and a session-wide directory of built images."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from scanner.engine import Engine
from scanner.rulesets import compile_path
from tests.disk import images


def need(*tools: str) -> None:
    """Skip (fail under ``CI=true``) when a tool that builds the images is missing."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        skip_or_fail(f"missing {', '.join(missing)} (see tests/disk/README or the report's Debian packages)")


def skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"disk test cannot run under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def disk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("disk")


@pytest.fixture(scope="session")
def samples(disk_dir: Path) -> Path:
    return images.populate(disk_dir / "samples")


@pytest.fixture(scope="session")
def rules_file(disk_dir: Path) -> Path:
    path = disk_dir / "rules" / "disk.yar"
    path.parent.mkdir()
    path.write_text(images.rules_source())
    return path


@pytest.fixture(scope="session")
def ruleset(rules_file: Path):
    return compile_path(rules_file.parent)


@pytest.fixture(scope="session")
def engine():
    engine = Engine()
    yield engine
    engine.close()


from scanner.lab.pytest_plugin import start_lab_guest  # noqa: E402 - the lab's fixture, for the live test

__all__ = ["start_lab_guest"]
