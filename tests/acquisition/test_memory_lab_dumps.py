"""Real guest dumps: QEMU's ELF core, pmemsave raw, and LiME made from it all agree with live RAM.

One lab guest (256 MiB, 2 marker processes) is paused; its live RAM file is scanned, then dumped
with ``dump-guest-memory`` (ELF) and ``pmemsave`` (raw), the raw dump converted to LiME. Every
format must find EICAR at the same physical addresses as live RAM, and those addresses must
hold the string.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.acquisition.memory import MemorySource, PhysRange, open_memory
from scanner.acquisition.memory.lime import to_lime
from scanner.acquisition.memory.raw import RawMemory
from scanner.lab import LabGuest, eicar
from scanner.rulesets import LoadedRuleset
from scanner.verdicts import VerdictKind

from .scanning import eicar_addresses, scan

pytestmark = pytest.mark.lab

MiB = 1 << 20


@dataclass(frozen=True)
class Paused:
    guest: LabGuest
    live: set[int]
    dumps: dict[str, Path]
    lime_ranges: list[PhysRange]


@pytest.fixture(scope="module")
def paused(lab_guest: LabGuest, tmp_path_factory: pytest.TempPathFactory, rules: LoadedRuleset) -> Iterator[Paused]:
    lab_guest.pause()
    try:
        out = tmp_path_factory.mktemp("dumps")
        live = scan(RawMemory(str(lab_guest.ram_path)), rules)
        lab_guest.dump_elf(out / "guest.elf")
        lab_guest.dump_raw(out / "guest.raw")
        lime_ranges = to_lime(out / "guest.raw", out / "guest.lime")
        dumps = {"elfcore": out / "guest.elf", "raw": out / "guest.raw", "lime": out / "guest.lime"}
        yield Paused(lab_guest, eicar_addresses(live), dumps, lime_ranges)
    finally:
        lab_guest.resume()


def read(source: MemorySource, address: int, length: int) -> bytes:
    with source.window(address, length) as view:
        return bytes(view)


def test_live_ram_holds_eicar_where_the_scan_says(paused: Paused) -> None:
    assert len(paused.live) >= len(paused.guest.marker_pids) == 2
    live = RawMemory(str(paused.guest.ram_path))
    for address in paused.live:
        assert read(live, address, 68) == eicar()


@pytest.mark.parametrize("fmt", ["elfcore", "raw", "lime"])
def test_every_dump_format_finds_eicar_at_the_live_addresses(paused: Paused, rules: LoadedRuleset, fmt: str) -> None:
    source = open_memory(str(paused.dumps[fmt]), "auto")
    assert source.format == fmt
    assert not source.unreadable()
    verdict = scan(source, rules)
    assert verdict.kind is VerdictKind.MALICIOUS
    assert verdict.coverage.complete, verdict.reason
    assert eicar_addresses(verdict) == paused.live
    for address in paused.live:
        assert read(source, address, 68) == eicar()
    source.close()


def test_elf_core_is_guest_ram_plus_firmware_below_4_gib_with_the_raw_bytes(paused: Paused) -> None:
    elf = open_memory(str(paused.dumps["elfcore"]), "elfcore")
    live = RawMemory(str(paused.guest.ram_path))
    raw = RawMemory(str(paused.dumps["raw"]))
    ram = paused.guest.memory_mib * MiB
    assert raw.size == ram
    first, *rest = elf.ranges()
    assert first == PhysRange(0, ram)  # one PT_LOAD for RAM (a 256 MiB q35 guest has no high RAM)
    assert all(ram < r.start and r.end <= 1 << 32 for r in rest)  # the BIOS ROM under 4 GiB
    for at in range(0, ram, 16 * MiB):
        with elf.window(at, 16 * MiB) as a, live.window(at, 16 * MiB) as b, raw.window(at, 16 * MiB) as c:
            assert a == b, f"ELF core differs from live RAM in {at:#x}+16 MiB"
            assert a == c, f"ELF core differs from the pmemsave dump in {at:#x}+16 MiB"


def test_lime_from_the_raw_dump_has_several_ranges(paused: Paused) -> None:
    assert len(paused.lime_ranges) > 1
    lime = open_memory(str(paused.dumps["lime"]), "lime")
    assert list(lime.ranges()) == _joined(paused.lime_ranges)


def _joined(ranges: list[PhysRange]) -> list[PhysRange]:
    out: list[PhysRange] = []
    for r in ranges:
        if out and out[-1].end == r.start:
            out[-1] = PhysRange(out[-1].start, out[-1].length + r.length)
        else:
            out.append(r)
    return out
