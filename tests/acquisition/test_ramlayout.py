"""QEMU's memory map as text: only guest RAM is kept, and text that does not add up is refused."""

from __future__ import annotations

import pytest

from scanner.acquisition.ramlayout import RamRange, check_blocks, parse_flatview, parse_gpa2hva
from scanner.errors import SourceError

FLAT = """FlatView #0
 AS "I/O", root: io
 Root memory region: io
  0000000000000000-0000000000000007 (prio 0, i/o): dma-chan
FlatView #1
 AS "memory", root: system
 AS "cpu-memory-0", root: system
 Root memory region: system
  0000000000000000-000000000009ffff (prio 0, ram): pc.ram
  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem
  00000000000c0000-00000000000dffff (prio 1, rom): pc.ram @00000000000c0000
  00000000000e0000-000000007fffffff (prio 0, ram): pc.ram @00000000000e0000 KVM
  00000000fd000000-00000000fdffffff (prio 1, ram): vga.vram
  00000000fffc0000-00000000ffffffff (prio 0, romd): pc.bios
  0000000100000000-000000013fffffff (prio 0, ram): pc.ram @0000000080000000 KVM
"""


def test_guest_ram_ranges_are_kept_merged_and_device_memory_left_out():
    assert parse_flatview(FLAT, ["pc.ram"]) == [
        RamRange(0, 0xA0000, "pc.ram", 0),
        RamRange(0xC0000, 0x80000000 - 0xC0000, "pc.ram", 0xC0000),
        RamRange(0x1_0000_0000, 1 << 30, "pc.ram", 0x8000_0000),
    ]


def test_overlapping_ranges_and_ranges_past_their_block_are_refused():
    overlapping = FLAT + "  0000000000001000-0000000000001fff (prio 0, ram): pc.ram @0000000000500000\n"
    with pytest.raises(SourceError, match="overlapping"):
        parse_flatview(overlapping, ["pc.ram"])
    with pytest.raises(SourceError, match=r"past the end of block pc\.ram"):
        check_blocks(parse_flatview(FLAT, ["pc.ram"]), {"pc.ram": 2 << 30})


def test_gpa2hva_answer_must_be_about_the_address_asked():
    assert parse_gpa2hva("Host virtual address for 0x100000 (pc.ram) is 0x7f1313f00000\r\n", 0x100000) == (
        "pc.ram",
        0x7F1313F00000,
    )
    with pytest.raises(SourceError):
        parse_gpa2hva("Host virtual address for 0x200000 (pc.ram) is 0x7f1313f00000", 0x100000)
    with pytest.raises(SourceError):
        parse_gpa2hva("No memory is mapped at address 0x100000", 0x100000)
