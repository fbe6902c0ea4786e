"""Fixtures for the OS-awareness tests: the lab guest (real QEMU), its raw dump, the shipped signatures."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.lab import GuestProcess, LabGuest
from scanner.lab.console import GuestModule
from scanner.lab.pytest_plugin import StartGuest, lab_guest, start_lab_guest
from scanner.rulesets import LoadedRuleset, compile_path

SIGNATURES = Path(__file__).resolve().parents[2] / "signatures"


@dataclass(frozen=True)
class Dumped:
    """A paused lab guest's raw dump, and what the guest said about its processes."""

    guest: LabGuest
    raw: Path
    elf: Path
    processes: list[GuestProcess]
    modules: tuple[GuestModule, ...] = ()  # /proc/modules as the guest printed it (distribution guest)


@pytest.fixture(scope="session")
def rules() -> LoadedRuleset:
    return compile_path(SIGNATURES)


@pytest.fixture(scope="module")
def dumped(lab_guest: LabGuest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dumped]:
    out = tmp_path_factory.mktemp("guestos")
    lab_guest.pause()
    try:
        lab_guest.dump_raw(out / "guest.raw")
        lab_guest.dump_elf(out / "guest.elf")
        yield Dumped(lab_guest, out / "guest.raw", out / "guest.elf", lab_guest.processes())
    finally:
        lab_guest.resume()


__all__ = ["StartGuest", "dumped", "lab_guest", "rules", "start_lab_guest"]


@pytest.fixture(scope="session")
def distro_dumped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dumped]:
    """The Debian distribution guest (systemd, 2 vCPUs, pti=on), booted once per session and dumped
    paused (raw and ELF); the guest is stopped once the dumps are written."""
    from scanner.errors import Unavailable
    from scanner.lab.distro import DistroGuest
    from scanner.lab.pytest_plugin import lab_unavailable

    out = tmp_path_factory.mktemp("distro")
    try:
        guest = DistroGuest.boot()
    except Unavailable as e:
        lab_unavailable(e.message)
        raise
    with guest:
        guest.pause()
        guest.dump_raw(out / "guest.raw")
        guest.dump_elf(out / "guest.elf")
        processes, loaded = guest.processes(), tuple(guest.modules())
    yield Dumped(guest, out / "guest.raw", out / "guest.elf", processes, loaded)
    for name in ("guest.raw", "guest.elf"):
        (out / name).unlink(missing_ok=True)
