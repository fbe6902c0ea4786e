"""LibVMI's copying path (``read_pa``): guest RAM on hugetlbfs cannot be mapped at ordinary
offsets, so :class:`LibvmiMemory` reads it through LibVMI. The RAM file is a real hugetlbfs file
(huge pages reserved for the test, the filesystem mounted here; tests run as root)."""

from __future__ import annotations

import mmap
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.acquisition.memory.vmi import LibvmiMemory
from scanner.errors import UnreadableError
from scanner.lab import eicar
from scanner.rulesets import LoadedRuleset

from .scanning import eicar_addresses, scan

MiB = 1 << 20
HUGE = 2 * MiB
PAGES = 8  # a 16 MiB "guest"
NR = Path("/proc/sys/vm/nr_hugepages")
PLANTED = (5 * MiB + 100, 2 * HUGE - 20, 15 * MiB)  # one straddles a huge-page edge


@pytest.fixture(scope="module")
def hugetlb_ram(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, bytes]]:
    """A 16 MiB file on a hugetlbfs mounted here, written through a mapping (hugetlbfs has no
    write(2)), with EICAR at :data:`PLANTED`; its bytes are returned as the oracle. The pages are
    reserved once per module (memory compacted first: 2 MiB pages need contiguous memory)."""
    Path("/proc/sys/vm/compact_memory").write_text("1")
    before = int(NR.read_text())
    NR.write_text(str(before + PAGES))
    mnt = tmp_path_factory.mktemp("hugetlb") / "huge"
    mnt.mkdir()
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        free = int(next(line for line in meminfo if line.startswith("HugePages_Free")).split()[1])
        assert free >= PAGES, f"the kernel could not reserve {PAGES} huge pages of {HUGE} bytes"
        subprocess.run(["mount", "-t", "hugetlbfs", "-o", f"pagesize={HUGE}", "avscan-test", str(mnt)], check=True)
        try:
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
        finally:
            subprocess.run(["umount", "--lazy", str(mnt)], check=True)  # freed once the last fd closes
    finally:
        NR.write_text(str(before))


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
