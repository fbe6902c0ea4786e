"""One real guest per module: its RAM holds the marker, QMP drives it, dumps are sane."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

from scanner.lab import LabGuest, eicar, variant_tag
from scanner.lab.markers import EICAR_HALVES

pytestmark = pytest.mark.lab


def _ram(guest: LabGuest) -> bytes:
    return guest.ram_path.read_bytes()


def test_ram_file_holds_the_assembled_marker_byte_for_byte(lab_guest: LabGuest) -> None:
    ram = _ram(lab_guest)
    assert len(ram) == lab_guest.memory_mib << 20
    offset = ram.find(eicar())
    assert offset >= 0, "assembled EICAR string not in guest RAM"
    assert ram[offset : offset + 68] == EICAR_HALVES[0] + EICAR_HALVES[1]
    assert ram.count(eicar()) >= len(lab_guest.marker_pids) == 2


def test_every_worker_wrote_its_variant_tag(lab_guest: LabGuest) -> None:
    ram = _ram(lab_guest)
    for index, pid in enumerate(lab_guest.marker_pids):
        assert variant_tag("t1", "marker", index, pid) in ram
    assert variant_tag("t1", "clean", 0, lab_guest.clean_pid) in ram


def test_whole_marker_is_not_in_the_image(lab_guest: LabGuest) -> None:
    packed = lab_guest.image.initramfs.read_bytes()
    unpacked = gzip.decompress(packed)
    assert EICAR_HALVES[0] in unpacked
    assert EICAR_HALVES[1] in unpacked
    assert eicar() not in unpacked
    assert eicar() not in packed
    assert eicar() not in lab_guest.image.kernel.read_bytes()


def test_console_lists_processes_with_maps(lab_guest: LabGuest) -> None:
    procs = {p.pid: p for p in lab_guest.processes()}
    assert procs[1].comm == "init"
    assert len(lab_guest.marker_pids) == 2
    for pid in [*lab_guest.marker_pids, lab_guest.clean_pid]:
        proc = procs[pid]
        assert proc.ppid == 1
        assert proc.uid == 0
        assert proc.comm == ("avscan-clean" if pid == lab_guest.clean_pid else "avscan-marker")
        assert any(m.path == "[heap]" and "rw" in m.perms for m in proc.maps)
        assert any(m.path == "[stack]" for m in proc.maps)


def test_pause_and_resume_over_qmp(lab_guest: LabGuest) -> None:
    assert lab_guest.accel in ("kvm", "tcg")
    assert lab_guest.status() == "running"
    lab_guest.pause()
    try:
        assert lab_guest.status() == "paused"
        assert lab_guest.qmp("query-status")["running"] is False
    finally:
        lab_guest.resume()
    assert lab_guest.status() == "running"


def test_elf_dump_is_a_core_file_with_the_marker(lab_guest: LabGuest, tmp_path: Path) -> None:
    path = tmp_path / "guest.elf"
    lab_guest.dump_elf(path)
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF"
    assert data[4] == 2
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    assert (e_type, e_machine) == (4, 62)  # ET_CORE, EM_X86_64
    assert len(data) >= lab_guest.memory_mib << 20
    assert eicar() in data
    assert lab_guest.status() == "running"


def test_raw_dump_matches_the_ram_file(lab_guest: LabGuest, tmp_path: Path) -> None:
    path = tmp_path / "guest.raw"
    lab_guest.pause()
    try:
        lab_guest.dump_raw(path)
        ram = _ram(lab_guest)
    finally:
        lab_guest.resume()
    raw = path.read_bytes()
    assert len(raw) == lab_guest.memory_mib << 20
    offset = ram.find(eicar())
    assert offset >= 0
    assert raw[offset : offset + 68] == eicar()
    assert raw[1 << 20 :] == ram[1 << 20 :]  # above the legacy ROM window they are the same bytes
