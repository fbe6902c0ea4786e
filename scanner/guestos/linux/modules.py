"""Loaded kernel modules, without symbols: ``struct module`` carved from the modules area, then its list.

Without kallsyms the ``modules`` list head is not known, but every ``struct module`` lives in its
module's own memory, in the modules area (``0xffffffffc0000000`` up). Mapped pages there are
searched at the struct's 64-byte alignment for a plausible module (state 0-3, a printable NUL
terminated name, list pointers whose neighbours point back); the first one found leads to the
whole circular list, whose one node outside the modules area is the ``modules`` head. Only the
fields checked need be in the page searched: a struct that runs on into the next page (not
physically contiguous: module memory is vmalloc'ed) is still found, its head read through the
page tables. Bounded by ``max_modules`` nodes and one pass over the modules area's mapped pages;
an inconsistent list, or a node whose name is not a name, is a problem, not a crash.
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


@dataclass(frozen=True)
class ModuleList:
    """The walk's result: modules in list order (newest first, as ``/proc/modules``), the head, problems."""

    modules: tuple[Module, ...]
    head: int  # address of the ``modules`` list_head (0 if none was met: no module, or a broken list)
    problems: tuple[Problem, ...]


def modules(kernel: LinuxKernel) -> tuple[list[Module], list[Problem]]:
    """Every loaded module (sorted by address) and the problems met; none loaded gives ``([], [])``."""
    found = module_list(kernel)
    return sorted(found.modules, key=lambda m: m.address), list(found.problems)


def module_list(kernel: LinuxKernel) -> ModuleList:
    """The module list walked from the first ``struct module`` carved (list order, head included)."""
    first = _carve(kernel)
    if first is None:
        return ModuleList((), 0, ())
    layout, kmem = kernel.layout, kernel.kmem
    list_off = layout["module.list"]
    out: list[Module] = []
    problems: list[Problem] = []
    head, head_at = 0, 0
    start = first + list_off
    node, seen = start, {start}
    for _ in range(kernel.limits.max_modules + 1):  # every module and the head
        try:
            if KERNEL_MAP_END <= node < MODULES_END:
                try:
                    out.append(_module(kernel, node - list_off))
                except WalkError as e:  # the links were checked: note this node, go on
                    problems.append(Problem("module list", e.message))
            elif head:
                raise WalkError("a second node outside the modules area", node)
            else:
                head, head_at = node, len(out)
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
    if not head and not problems:
        problems.append(Problem("module list", "no node outside the modules area (no list head)"))
    out = out[head_at:] + out[:head_at]  # the walk began at the module carved: list order starts at the head
    return ModuleList(tuple(out), head, tuple(problems))


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
    layout, kmem = kernel.layout, kernel.kmem
    name_off, state_off, list_off = layout["module.name"], layout["module.state"], layout["module.list"]
    # the part of the struct checked: state, list pointers, the name up to its longest
    header = max(state_off + 4, list_off + 16, name_off + layout.counts["module.name"])
    for piece in kmem.tables.walk(KERNEL_MAP_END, MODULES_END):
        if not isinstance(piece, Mapping):
            continue
        with kernel.source.window(piece.physical, piece.size) as view:
            data = bytes(view)
        for off in range(0, len(data), ALIGN):
            buf, at = data, off
            if off + header > len(data):  # runs on into the next page: read it through the page tables
                try:
                    buf, at = kmem.read(piece.virtual + off, header), 0
                except WalkError:
                    continue
            (state,) = struct.unpack_from("<I", buf, at + state_off)
            if state > MAX_STATE or not NAME.match(buf, at + name_off):
                continue
            nxt, prev = struct.unpack_from("<QQ", buf, at + list_off)
            me = piece.virtual + off + list_off
            try:
                if kmem.u64(nxt + 8) == me and kmem.u64(prev) == me:
                    return piece.virtual + off
            except WalkError:
                continue
    return None
