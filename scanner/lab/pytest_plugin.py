"""Pytest fixtures for tests that need a real lab guest.

Import them into a ``conftest.py`` (``from scanner.lab.pytest_plugin import lab_guest,
start_lab_guest``). When the lab cannot run here (no QEMU, no apt, no /dev/shm) the test is
skipped with the reason, except under ``CI=true`` where it fails instead. Guests are always
stopped and their files removed at teardown, whatever the test did.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from scanner.errors import Unavailable
from scanner.lab.guest import LabGuest

StartGuest = Callable[..., LabGuest]


def lab_unavailable(reason: str) -> None:
    """Skip the current test, or fail it when ``CI=true`` (CI must run every lab test)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"guest lab cannot run under CI=true: {reason}")
    pytest.skip(f"guest lab cannot run: {reason}")


def start_or_skip(**kwargs: object) -> LabGuest:
    try:
        return LabGuest.start(**kwargs)  # type: ignore[arg-type]
    except Unavailable as e:
        lab_unavailable(e.message)
        raise  # unreachable: skip and fail raise


@pytest.fixture
def start_lab_guest() -> Iterator[StartGuest]:
    """A function that boots a guest (``LabGuest.start`` arguments); all stop at teardown."""
    guests: list[LabGuest] = []

    def start(**kwargs: object) -> LabGuest:
        guest = start_or_skip(**kwargs)
        guests.append(guest)
        return guest

    yield start
    for guest in guests:
        guest.stop()


@pytest.fixture(scope="module")
def lab_guest() -> Iterator[LabGuest]:
    """One guest per test module: 256 MiB, 2 markers, variant ``t1``."""
    with start_or_skip(memory_mib=256, markers=2, variant="t1") as guest:
        yield guest
