"""Loaded kernel modules, without symbols: ``struct module`` carved from the modules area, then its list.

Without kallsyms the ``modules`` list head is not known, but every ``struct module`` lives in its
module's own memory, in the modules area (``0xffffffffc0000000`` up). Mapped pages there are
searched at the struct's 64-byte alignment for a plausible module (state 0-3, a printable NUL
terminated name, list pointers whose neighbours point back); the first one found leads to the
whole circular list, whose one node outside the modules area is the ``modules`` head. Bounded by
``max_modules``; an inconsistent list is a problem, not a crash.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from scanner.guestos.linux.kaslr import KERNEL_MAP_END, MODULES_END
from scanner.guestos.linux.kernel import LinuxKernel
from scanner.guestos.linux.paging import Mapping
from scanner.guestos.problems import Problem, WalkError

NAME = re.compile(rb"[A-Za-z0-9_-]{1,55}\0")
ALIGN = 64
MAX_STATE = 3


@dataclass(frozen=True)
class Module:
    address: int
    name: str
    state: int
    base: int = 0
    size: int = 0


def modules(kernel: LinuxKernel) -> tuple[list[Module], list[Problem]]:
    """Every loaded module (in list order) and the problems met; none loaded gives ``([], [])``."""
    first = _carve(kernel)
    if first is None:
        return [], []
    layout, kmem = kernel.layout, kernel.kmem
    out: list[Module] = []
    problems: list[Problem] = []
    start = first + layout["module.list"]
    node, seen = start, {start}
    for _ in range(kernel.limits.max_modules):
        try:
            if KERNEL_MAP_END <= node < MODULES_END:
                out.append(_module(kernel, node - layout["module.list"]))
            nxt = kmem.pointer(node, "module.list.next")
            if kmem.pointer(nxt + 8, "module.list.prev") != node:
                raise WalkError("module list next->prev does not point back", nxt)
        except WalkError as e:
            problems.append(Problem("module list", e.message))
            break
        if nxt == start:
            break
        if nxt in seen:
            problems.append(Problem("module list", f"loops back at {nxt:#x}"))
            break
        seen.add(nxt)
        node = nxt
    else:
        problems.append(Problem("module list", f"more than {kernel.limits.max_modules} modules"))
    out.sort(key=lambda m: m.address)
    return out, problems


def _module(kernel: LinuxKernel, address: int) -> Module:
    layout, kmem = kernel.layout, kernel.kmem
    raw = kmem.read(address + layout["module.name"], layout.counts["module.name"])
    m = NAME.match(raw)
    if not m:
        raise WalkError("module name is not printable", address)
    state = kmem.u32(address + layout["module.state"])
    base = kmem.u64(address + layout["module.core_layout.base"]) if layout.has("module.core_layout.base") else 0
    size = kmem.u32(address + layout["module.core_layout.size"]) if layout.has("module.core_layout.size") else 0
    return Module(address, m.group()[:-1].decode(), state, base, size)


def _carve(kernel: LinuxKernel) -> int | None:
    layout = kernel.layout
    name_off, state_off, list_off = layout["module.name"], layout["module.state"], layout["module.list"]
    for piece in kernel.kmem.tables.walk(KERNEL_MAP_END, MODULES_END):
        if not isinstance(piece, Mapping):
            continue
        with kernel.source.window(piece.physical, piece.size) as view:
            data = bytes(view)
        for off in range(0, max(0, len(data) - layout.sizes["module"]), ALIGN):
            (state,) = struct.unpack_from("<I", data, off + state_off)
            if state > MAX_STATE or not NAME.match(data, off + name_off):
                continue
            nxt, prev = struct.unpack_from("<QQ", data, off + list_off)
            me = piece.virtual + off + list_off
            try:
                if kernel.kmem.u64(nxt + 8) == me and kernel.kmem.u64(prev) == me:
                    return piece.virtual + off
            except WalkError:
                continue
    return None
