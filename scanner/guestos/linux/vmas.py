"""A process's memory regions (VMAs): the 6.1+ maple tree ``mm_mt``, or the older ``mmap`` list.

Maple tree encoding (lib/maple_tree.c, include/linux/maple_tree.h): the tree's root pointer is a
node when ``entry & 3 == 2`` (``mt_mk_root``: the encoded node | 2) and above 4096. Pointers to
child nodes inside a node are encoded nodes *without* that tag (``mt_mk_node``: node address |
type << 3 | 4), so a child is recognised by ``entry & 7 == 4``. The node is at ``entry & ~0xff``,
its type is ``(entry >> 3) & 0xf``: 0 dense, 1 ``maple_leaf_64``, 2 ``maple_range_64``, 3
``maple_arange_64``; types below 2 are leaves whose slots hold the VMAs. A child's ``parent``
word (the node's first field, low byte = flags) must name the node it was found in. Slot ``i``
covers up to ``pivot[i]`` (the last slot up to the node's own maximum); the node's data ends at
the slot reaching that maximum, or at a zero pivot after the first (the slots after the end may
hold node metadata, never entries).

Every walk is bounded (nodes, depth, VMAs); each VMA must point back to its ``mm`` and have
``vm_start < vm_end`` inside user space, and VMAs must not overlap. Anything else raises
:class:`~scanner.guestos.problems.WalkError`, which the caller records.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from scanner.guestos.linux.layout import Layout
from scanner.guestos.linux.memory import VirtualMemory
from scanner.guestos.linux.paths import file_path
from scanner.guestos.problems import Limits, Problem, WalkError

USER_END_4 = 0x0000_8000_0000_0000
USER_END_5 = 0x0100_0000_0000_0000
VM_READ, VM_WRITE, VM_EXEC, VM_SHARED, VM_MAYSHARE = 1, 2, 4, 8, 0x80
LEAF_TYPES = (0, 1)
MAX_INDEX = (1 << 64) - 1
RANGE_64, ARANGE_64 = 2, 3


@dataclass(frozen=True)
class Vma:
    """One region ``[start, end)`` of a process; ``path`` is the backing file, ``[heap]``/``[stack]``, or ""."""

    start: int
    end: int
    flags: int
    pgoff: int
    path: str
    anonymous: bool

    @property
    def perms(self) -> str:
        f = self.flags
        return (
            ("r" if f & VM_READ else "-")
            + ("w" if f & VM_WRITE else "-")
            + ("x" if f & VM_EXEC else "-")
            + ("s" if f & VM_MAYSHARE else "p")  # as /proc/<pid>/maps: a read-only shared mapping is "s"
        )

    @property
    def offset(self) -> int:
        """The file offset ``/proc/<pid>/maps`` shows: ``vm_pgoff`` in bytes for a file, else 0."""
        return 0 if self.anonymous else self.pgoff * 4096

    def describe(self) -> str:
        return f"{self.start:#x}-{self.end:#x} {self.perms} {self.path}".rstrip()


def vma_pointers(kmem: VirtualMemory, layout: Layout, mm: int, limits: Limits) -> list[int]:
    """The addresses of ``mm``'s ``vm_area_struct`` objects, in tree order (bounded)."""
    if layout.has("mm.mm_mt"):
        root = kmem.u64(mm + layout["mm.mm_mt"] + layout["mt.ma_root"])
        return _maple(kmem, layout, root, limits)
    if layout.has("mm.mmap") and layout.has("vma.vm_next"):
        return _linked(kmem, layout, mm, limits)
    raise WalkError("the profile knows neither mm_mt nor mmap")


NODE_MASK = 0xFF


def _is_root_node(entry: int) -> bool:
    """The tree's root pointer names a node (``mt_mk_root``: tagged ``...10``)."""
    return entry & 3 == 2 and entry > 4096


def _is_child_node(entry: int) -> bool:
    """A slot of an inner node names a child node (``mt_mk_node``: low bits ``100``, no root tag)."""
    return entry & 7 == 4 and entry > 4096


def _maple(kmem: VirtualMemory, layout: Layout, root: int, limits: Limits) -> list[int]:  # noqa: PLR0912 - every check bounds a hostile tree
    if root == 0:
        return []
    if not _is_root_node(root):
        return [root]
    out: list[int] = []
    seen: set[int] = set()
    stack = [(root, 0, MAX_INDEX, 0)]
    while stack:
        entry, depth, node_max, parent = stack.pop()
        node = entry & ~NODE_MASK
        if node in seen:
            raise WalkError("maple tree node visited twice (a cycle)", node)
        seen.add(node)
        if len(seen) > limits.max_tree_nodes or depth > limits.max_tree_depth:
            raise WalkError(f"maple tree larger than {limits.max_tree_nodes} nodes or depth {limits.max_tree_depth}")
        kind = (entry >> 3) & 0xF
        short = "ma64" if kind == ARANGE_64 else "mr64"
        if kind not in (*LEAF_TYPES, RANGE_64, ARANGE_64):
            raise WalkError(f"maple node of unknown type {kind}", node)
        pivots, slots, up = _node(kmem, layout, node, short)
        if parent and up & ~NODE_MASK != parent:
            raise WalkError(f"maple node's parent is {up & ~NODE_MASK:#x}, not its holder {parent:#x}", node)
        npiv = len(pivots)
        children: list[tuple[int, int, int, int]] = []
        for i, slot in enumerate(slots):
            slot_max = pivots[i] if i < npiv else node_max
            if i > 0 and slot_max == 0:
                break
            if slot_max > node_max:
                raise WalkError(f"maple pivot {slot_max:#x} above the node's maximum {node_max:#x}", node)
            if slot and kind in LEAF_TYPES:
                out.append(slot)
                if len(out) > limits.max_vmas:
                    raise WalkError(f"more than {limits.max_vmas} VMAs")
            elif slot and _is_child_node(slot):
                children.append((slot, depth + 1, slot_max, node))
            elif slot:
                raise WalkError(f"maple inner node slot {i} is not a node ({slot:#x})", node)
            if slot_max == node_max:
                break
        stack.extend(reversed(children))
    return out


def _node(kmem: VirtualMemory, layout: Layout, node: int, short: str) -> tuple[list[int], list[int], int]:
    """The pivots, slots and parent word of a maple node laid out as ``short`` (``mr64`` or ``ma64``)."""
    npiv, nslot = layout.counts[f"{short}.pivot"], layout.counts[f"{short}.slot"]
    raw = kmem.read(node, layout[f"{short}.slot"] + 8 * nslot)
    at = layout[f"{short}.parent"] if layout.has(f"{short}.parent") else 0  # first member in every 6.x
    pivots = [int.from_bytes(raw[layout[f"{short}.pivot"] + 8 * i :][:8], "little") for i in range(npiv)]
    slots = [int.from_bytes(raw[layout[f"{short}.slot"] + 8 * i :][:8], "little") for i in range(nslot)]
    return pivots, slots, int.from_bytes(raw[at : at + 8], "little")


def _linked(kmem: VirtualMemory, layout: Layout, mm: int, limits: Limits) -> list[int]:
    out: list[int] = []
    seen: set[int] = set()
    vma = kmem.pointer(mm + layout["mm.mmap"], "mm.mmap", nullable=True)
    while vma:
        if vma in seen:
            raise WalkError("VMA list loops", vma)
        seen.add(vma)
        out.append(vma)
        if len(out) > limits.max_vmas:
            raise WalkError(f"more than {limits.max_vmas} VMAs")
        vma = kmem.pointer(vma + layout["vma.vm_next"], "vm_next", nullable=True)
    return out


def read_vmas(
    kmem: VirtualMemory, layout: Layout, mm: int, limits: Limits, levels: int = 4
) -> tuple[list[Vma], list[Problem]]:
    """``mm``'s VMAs sorted by address, and the problems met (a bad VMA is dropped and recorded)."""
    problems: list[Problem] = []
    brk = (kmem.u64(mm + layout["mm.start_brk"]), kmem.u64(mm + layout["mm.brk"]))
    stack = kmem.u64(mm + layout["mm.start_stack"])
    vdso = kmem.u64(mm + layout["mm.context.vdso"]) if layout.has("mm.context.vdso") else 0
    user_end = USER_END_4 if levels == 4 else USER_END_5
    vmas: list[Vma] = []
    for ptr in vma_pointers(kmem, layout, mm, limits):
        try:
            vmas.append(_vma(kmem, layout, ptr, mm, user_end, (brk, stack, vdso), limits))
        except WalkError as e:
            problems.append(Problem(f"vma {ptr:#x}", e.message))
    vmas.sort(key=lambda v: v.start)
    for a, b in itertools.pairwise(vmas):
        if b.start < a.end:
            raise WalkError(f"VMAs overlap: {a.describe()} and {b.describe()}")
    return vmas, problems


def _vma(
    kmem: VirtualMemory,
    layout: Layout,
    ptr: int,
    mm: int,
    user_end: int,
    marks: tuple[tuple[int, int], int, int],
    limits: Limits,
) -> Vma:
    """The VMA at ``ptr``; ``marks`` are the mm's (brk range, start of stack, vDSO address)."""
    brk, stack, vdso = marks
    if ptr < 0xFFFF_8000_0000_0000:
        raise WalkError(f"VMA pointer {ptr:#x} is not a kernel address", ptr)
    raw = kmem.read(ptr, layout.sizes["vma"])

    def word(name: str) -> int:
        return int.from_bytes(raw[layout[name] : layout[name] + 8], "little")

    start, end, owner = word("vma.vm_start"), word("vma.vm_end"), word("vma.vm_mm")
    if owner != mm:
        raise WalkError(f"VMA belongs to mm {owner:#x}, not {mm:#x}", ptr)
    if not (start < end <= user_end) or start & 0xFFF or end & 0xFFF:
        raise WalkError(f"absurd VMA range {start:#x}-{end:#x}", ptr)
    file = word("vma.vm_file")
    path = file_path(kmem, layout, file, limits.max_path_depth) if file else ""
    if not file and start <= brk[1] and end >= brk[0] and brk[1] > brk[0]:
        path = "[heap]"
    elif not file and start <= stack < end:
        path = "[stack]"
    elif not file and vdso and start == vdso:
        path = "[vdso]"
    return Vma(start, end, word("vma.vm_flags"), word("vma.vm_pgoff"), path, anonymous=not file)
