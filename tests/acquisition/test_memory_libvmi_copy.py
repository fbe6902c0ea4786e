"""LibVMI's copying path (``read_pa``): guest RAM on hugetlbfs cannot be mapped at ordinary
offsets, so :class:`LibvmiMemory` reads it through LibVMI. The RAM file is a real hugetlbfs file
(huge pages reserved for the test, the filesystem mounted here; tests run as root)."""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.acquisition.memory.vmi import LibvmiMemory
from scanner.errors import UnreadableError
from scanner.lab import eicar
from scanner.rulesets import LoadedRuleset
from tests.support.hugepages import HUGE, MiB, hugetlbfs

from .scanning import eicar_addresses, scan

PAGES = 8  # a 16 MiB "guest"
PLANTED = (5 * MiB + 100, 2 * HUGE - 20, 15 * MiB)  # one straddles a huge-page edge


@pytest.fixture(scope="module")
def hugetlb_ram() -> Iterator[tuple[Path, bytes]]:
    """A 16 MiB file on a hugetlbfs mounted here, written through a mapping (hugetlbfs has no
    write(2)), with EICAR at :data:`PLANTED`; its bytes are returned as the oracle."""
    with hugetlbfs(PAGES) as mnt:
        path = mnt / "guest-ram"
        data = bytearray(PAGES * HUGE)
        for i in range(0, len(data), 4096):
            data[i : i + 8] = i.to_bytes(8, "little")  # every page distinct
        for at in PLANTED:
            data[at : at + len(eicar())] = eicar()
        with path.open("w+b") as f:
            f.truncate(len(data))
            with mmap.mmap(f.fileno(), len(data)) as m:
                m[:] = data
        yield path, bytes(data)


def test_hugetlbfs_ram_is_read_through_libvmi_and_equals_the_file(hugetlb_ram: tuple[Path, bytes]) -> None:
    path, data = hugetlb_ram
    source = LibvmiMemory(str(path))
    try:
        assert [(r.start, r.length) for r in source.ranges()] == [(0, len(data))]
        for address, length in ((0, 4096), (HUGE - 100, 300), (7 * MiB + 12345, 2 * MiB), (len(data) - 64, 64)):
            with source.window(address, length) as view:
                assert bytes(view) == data[address : address + length], hex(address)
        assert source.holes(0, len(data)) == []  # every huge page was written: no hole to skip
    finally:
        source.close()


def test_a_scan_of_hugetlbfs_ram_finds_every_marker(hugetlb_ram: tuple[Path, bytes], rules: LoadedRuleset) -> None:
    path, _ = hugetlb_ram
    source = LibvmiMemory(str(path))
    try:
        verdict = scan(source, rules)
    finally:
        source.close()
    assert verdict.coverage.complete, verdict.coverage.gaps
    assert eicar_addresses(verdict) == set(PLANTED)


def test_a_read_past_the_ram_is_unreadable_not_padding(hugetlb_ram: tuple[Path, bytes]) -> None:
    path, data = hugetlb_ram
    source = LibvmiMemory(str(path))
    try:
        with pytest.raises(UnreadableError), source.window(len(data) - 4096, 8192):
            pass
    finally:
        source.close()
