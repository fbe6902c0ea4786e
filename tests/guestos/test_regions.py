"""Kernel regions: a kernel-side address is named by its module, or by its offset in the kernel image."""

from __future__ import annotations

from scanner.guestos.linux.kaslr import DEFAULT_TEXT, KERNEL_MAP_END
from scanner.guestos.linux.modules import Module
from scanner.guestos.linux.regions import KernelRegions

TEXT = DEFAULT_TEXT + 0x1E00_0000  # a KASLR slide
DUMMY = Module(KERNEL_MAP_END + 0x5040, "dummy", 0, base=KERNEL_MAP_END + 0x4000, size=0x3000)
CRC = Module(KERNEL_MAP_END + 0x9040, "crc_itu_t", 0, base=KERNEL_MAP_END + 0x8000, size=0x2000)
REGIONS = KernelRegions(TEXT, (DUMMY, CRC), ((0x1000_0000, 0x20_0000, TEXT), (0x3000_0000, 0x1000, DUMMY.base)))


def test_module_addresses_name_their_module_and_offset() -> None:
    assert REGIONS.name(DUMMY.base) == "module dummy (+0x0)"
    assert REGIONS.name(CRC.base + 0x1FFF) == "module crc_itu_t (+0x1fff)"
    assert REGIONS.name(DUMMY.base + DUMMY.size) == "kernel modules area (no loaded module)"


def test_image_addresses_are_named_from_text() -> None:
    assert REGIONS.name(TEXT + 0x1234) == "kernel image (_text+0x1234)"
    assert REGIONS.name(TEXT - 0x10) == "kernel image (_text-0x10)"
    assert REGIONS.name(0xFFFF_8880_0000_0000) == "kernel memory"


def test_physical_addresses_map_back_through_the_kernel_runs() -> None:
    assert REGIONS.virtual_of(0x1000_0000 + 0x42) == TEXT + 0x42
    assert REGIONS.virtual_of(0x3000_0FFF) == DUMMY.base + 0xFFF
    assert REGIONS.virtual_of(0x3000_1000) is None
    assert REGIONS.virtual_of(0x0FFF_FFFF) is None
