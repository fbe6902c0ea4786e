"""Several guests at once, 512 MiB, and cleanup on success and on failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scanner.errors import InvalidArgument
from scanner.lab import LabGuest, eicar, variant_tag
from scanner.lab.guest import SHM_DIR, SHM_PREFIX
from scanner.lab.pytest_plugin import StartGuest, start_or_skip

pytestmark = pytest.mark.lab


def _our_shm_files() -> list[Path]:
    return sorted(SHM_DIR.glob(f"{SHM_PREFIX}{os.getpid()}-*"))


def test_two_guests_run_at_once_and_differ(start_lab_guest: StartGuest) -> None:
    a = start_lab_guest(memory_mib=256, markers=1, variant="a")
    b = start_lab_guest(memory_mib=512, markers=3, variant="b")
    assert a.ram_path != b.ram_path
    assert a.qmp_path != b.qmp_path
    assert a.status() == b.status() == "running"
    ram_a, ram_b = a.ram_path.read_bytes(), b.ram_path.read_bytes()
    assert (len(ram_a), len(ram_b)) == (256 << 20, 512 << 20)
    assert len(b.marker_pids) == 3
    assert eicar() in ram_a
    assert ram_b.count(eicar()) >= 3
    assert variant_tag("a", "marker", 0, a.marker_pids[0]) in ram_a
    assert b"AVSCAN-LAB-VARIANT=b;" in ram_b
    assert b"AVSCAN-LAB-VARIANT=b;" not in ram_a
    for guest in (a, b):
        guest.stop()
        assert not guest.ram_path.exists()
        assert not guest.workdir.exists()
    assert _our_shm_files() == []


def test_no_marker_guest_has_no_marker(start_lab_guest: StartGuest) -> None:
    guest = start_lab_guest(markers=0, variant="none")
    assert guest.marker_pids == []
    assert eicar() not in guest.ram_path.read_bytes()


def test_cleanup_happens_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with start_or_skip(markers=1) as guest:
            ram, workdir = guest.ram_path, guest.workdir
            assert ram.exists()
            raise RuntimeError("boom")
    assert not ram.exists()
    assert not workdir.exists()
    assert _our_shm_files() == []


def test_bad_arguments_are_refused_before_booting() -> None:
    with pytest.raises(InvalidArgument, match="variant"):
        LabGuest.start(variant="has space")
