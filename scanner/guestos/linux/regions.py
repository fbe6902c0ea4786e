"""Which part of the kernel an address is in: a loaded module, or the kernel image.

For kernel-side findings. A virtual address in the modules area names the module whose core
allocation (``core_layout.base .. + size``) holds it; one in the kernel image mapping is named by
its offset from the runtime ``_text``. A physical address (a physical scan's hit no process maps)
is first mapped back through the kernel's own page tables over those two areas (bounded walks).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from scanner.guestos.linux.kaslr import KERNEL_MAP, KERNEL_MAP_END, MODULES_END
from scanner.guestos.linux.kernel import LinuxKernel
from scanner.guestos.linux.modules import Module
from scanner.guestos.linux.paging import Mapping


@dataclass(frozen=True)
class KernelRegions:
    """Names for kernel addresses (see the module docstring)."""

    text: int
    modules: tuple[Module, ...]
    physical_runs: tuple[tuple[int, int, int], ...] = ()  # (physical start, size, virtual start), sorted

    def name(self, virtual: int) -> str:
        """``module <name> (+0x..)``, ``kernel image (_text+0x..)``, or the area it is in."""
        for m in self.modules:
            if m.base <= virtual < m.base + m.size:
                return f"module {m.name} (+{virtual - m.base:#x})"
        if KERNEL_MAP <= virtual < KERNEL_MAP_END:
            sign = "+" if virtual >= self.text else "-"
            return f"kernel image (_text{sign}{abs(virtual - self.text):#x})"
        if KERNEL_MAP_END <= virtual < MODULES_END:
            return "kernel modules area (no loaded module)"
        return "kernel memory"

    def virtual_of(self, physical: int) -> int | None:
        """The kernel image or module virtual address mapping ``physical``, if any."""
        i = bisect.bisect_right(self.physical_runs, (physical, 1 << 64)) - 1
        if i >= 0:
            start, size, virtual = self.physical_runs[i]
            if start <= physical < start + size:
                return virtual + physical - start
        return None


def kernel_regions(kernel: LinuxKernel, modules: list[Module], with_physical: bool = False) -> KernelRegions:
    """The kernel's regions; ``with_physical`` also maps the image and modules area back from RAM."""
    runs: list[tuple[int, int, int]] = []
    if with_physical:
        for piece in kernel.kmem.tables.walk(KERNEL_MAP, MODULES_END):
            if isinstance(piece, Mapping):
                runs.append((piece.physical, piece.size, piece.virtual))
        runs.sort()
    return KernelRegions(kernel.anchor.text, tuple(modules), tuple(runs))
