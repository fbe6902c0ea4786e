"""The RAM layout of an x86 ``pc``/``q35`` QEMU guest without asking QEMU's monitor.

libvirt marks a domain "custom-monitor" tainted as soon as anyone sends it a monitor command, so
for libvirt domains the layout comes from what needs no monitor:

- **guest-physical ranges** from the machine type and RAM size, by QEMU's own rule for these
  boards (``hw/i386/pc_q35.c``, ``pc_piix.c``): RAM up to the start of the PCI hole, the rest
  from 4 GiB. q35 keeps all RAM below 4 GiB when it is smaller than 0xB0000000 bytes, otherwise
  2 GiB; i440fx (``pc``) when smaller than 0xE0000000, otherwise 3 GiB. The legacy area
  0xA0000-0xFFFFF (VGA window, option ROMs, BIOS shadow) is left out: not read, counted as a
  block's bytes not mapped;
- **the host address** of the RAM block from ``/proc/PID/maps``: the one mapping of exactly the
  RAM size directly followed by QEMU's guard page (``qemu_ram_mmap`` reserves one page past
  every RAM block, mapped ``PROT_NONE``).

Contract: anything outside that rule (another machine type, ``max-ram-below-4g``, RAM split into
NUMA nodes or hotplug DIMMs, RAM large enough that QEMU may move it above the AMD HyperTransport
hole, no single candidate mapping) raises :class:`~scanner.errors.SourceError` naming it: a
layout is never guessed. The caller checks the result against an independent reader of
guest-physical memory (libvirt's ``virDomainMemoryPeek``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from scanner.acquisition.memory.qemuproc import PAGE, Mapping
from scanner.acquisition.ramlayout import RamLayout, RamRange
from scanner.errors import SourceError

GIB = 1 << 30
LEGACY_START, LEGACY_END = 0xA0000, 0x100000
MAX_RAM = 1000 * GIB  # past this QEMU may start high RAM at 1 TiB on AMD hosts: not guessed
BLOCK = "pc.ram"


def below_4g(machine: str, size: int) -> int:
    """Bytes of RAM QEMU puts below the PCI hole for machine type ``machine``."""
    if "q35" in machine:
        return size if size < 0xB000_0000 else 2 * GIB
    if machine == "pc" or machine.startswith(("pc-i440fx", "pc-")):
        return size if size < 0xE000_0000 else 3 * GIB
    raise SourceError(f"machine {machine}", "RAM layout known only for x86 pc and q35 machines")


def physical_ranges(machine: str, size: int) -> list[RamRange]:
    """Guest RAM ranges (block offsets = guest-physical below 4 GiB) of a ``size``-byte guest."""
    if not 0 < size <= MAX_RAM:
        raise SourceError(f"machine {machine}", f"{size} bytes of RAM: layout not derived past {MAX_RAM} bytes")
    low = below_4g(machine, size)
    ranges = [RamRange(0, min(low, LEGACY_START), BLOCK, 0)]
    if low > LEGACY_END:
        ranges.append(RamRange(LEGACY_END, low - LEGACY_END, BLOCK, LEGACY_END))
    if size > low:
        ranges.append(RamRange(4 * GIB, size - low, BLOCK, low))
    return ranges


def ram_mapping(maps: Sequence[Mapping], size: int, where: str) -> Mapping:
    """The one mapping of exactly ``size`` bytes, readable and writable, with QEMU's guard page
    right after it."""
    found = [m for m, after in pairwise(maps) if _ram_then_guard(m, after, size)]
    if len(found) != 1:
        raise SourceError(where, f"{len(found)} mappings of QEMU look like its {size}-byte RAM block, expected one")
    return found[0]


def _ram_then_guard(m: Mapping, after: Mapping, size: int) -> bool:
    return (
        m.end - m.start == size
        and m.perms.startswith("rw")
        and after.start == m.end
        and after.end - after.start >= PAGE
        and after.perms.startswith("---")
    )


def derive_layout(pid: int, machine: str, size: int, maps: Sequence[Mapping], where: str) -> RamLayout:
    """The layout of QEMU ``pid`` running machine ``machine`` with ``size`` bytes of RAM."""
    ranges = physical_ranges(machine, size)
    base = ram_mapping(maps, size, where).start
    resolved = tuple(RamRange(r.physical, r.length, r.block, r.offset, base + r.offset) for r in ranges)
    return RamLayout(pid, resolved, {BLOCK: size})
