"""The RAM layout of pc/q35 guests derived without QEMU's monitor, checked against what QEMU's
monitor says (``info mtree -f`` and ``gpa2hva`` through QMP) on real QEMU processes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from scanner.acquisition.live import QemuGuest
from scanner.acquisition.memory.qemuproc import Mapping, read_maps
from scanner.acquisition.pclayout import LEGACY_END, LEGACY_START, derive_layout, physical_ranges, ram_mapping
from scanner.acquisition.qmp import QmpClient
from scanner.errors import SourceError

MiB, GiB = 1 << 20, 1 << 30


def host_of(layout, physical: int) -> int | None:
    for r in layout.ranges:
        if r.physical <= physical < r.physical + r.length:
            return r.host + physical - r.physical
    return None


@pytest.mark.parametrize(
    ("machine", "size"),
    [("q35", 256 * MiB), ("q35", 3 * GiB), ("pc", 1 * GiB), ("pc", 3840 * MiB)],
)
def test_the_derived_layout_is_qemus_own_less_the_legacy_area(tmp_path: Path, machine: str, size: int) -> None:
    qmp = tmp_path / "qmp.sock"
    backend = f'{{"qom-type":"memory-backend-ram","id":"pc.ram","size":{size}}}'  # as libvirt starts QEMU
    qemu = subprocess.Popen(
        [
            *("qemu-system-x86_64", "-nodefaults", "-display", "none", "-S", "-accel", "tcg", "-nic", "none"),
            *("-m", f"{size // MiB}M", "-object", backend, "-machine", f"{machine},memory-backend=pc.ram"),
            *("-qmp", f"unix:{qmp},server=on,wait=off"),
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        client = QmpClient(qmp)
        client.connect(time.monotonic() + 30)
        client.close()
        with QemuGuest(str(qmp)) as guest:
            told = guest.ram_layout()  # QEMU's monitor: the oracle
        derived = derive_layout(qemu.pid, machine, size, read_maps(qemu.pid), "test")
    finally:
        qemu.kill()
        qemu.wait()
    assert derived.block_sizes == {"pc.ram": size} == dict(told.block_sizes)
    for r in derived.ranges:  # every derived byte is RAM where QEMU says, at the host address it says
        for physical in (r.physical, r.physical + r.length // 2, r.physical + r.length - 1):
            assert host_of(told, physical) == host_of(derived, physical), hex(physical)
    left_out = told.mapped - derived.mapped
    assert 0 <= left_out <= LEGACY_END - LEGACY_START  # only the legacy VGA/ROM window is not read
    assert max(r.physical + r.length for r in derived.ranges) == max(r.physical + r.length for r in told.ranges)


def test_other_machines_and_sizes_are_refused_not_guessed() -> None:
    with pytest.raises(SourceError, match="only for x86 pc and q35"):
        physical_ranges("microvm", 256 * MiB)
    with pytest.raises(SourceError, match="not derived past"):
        physical_ranges("q35", 2000 * GiB)


def test_a_ram_block_is_one_mapping_with_a_guard_page_after_it() -> None:
    ram = Mapping(0x10000000, 0x20000000, False, 0, "", "rw-p")
    guard = Mapping(0x20000000, 0x20001000, False, 0, "", "---p")
    other = Mapping(0x30000000, 0x40000000, False, 0, "", "rw-p")  # same size, no guard page
    assert ram_mapping([ram, guard, other], 0x10000000, "t") == ram
    twin = Mapping(0x40000000, 0x40001000, False, 0, "", "---p")
    with pytest.raises(SourceError, match="2 mappings"):
        ram_mapping([ram, guard, other, twin], 0x10000000, "t")
