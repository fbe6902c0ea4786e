"""KASLR undone from memory alone: find ``init_task`` by its BTF layout, then the kernel's page tables.

Method (no symbols, no kallsyms): ``init_task`` is the only task whose ``comm`` is ``swapper/0``
and whose ``pid``/``tgid`` are 0; it is statically initialised with ``real_parent`` and
``group_leader`` pointing to itself, which gives its **virtual** address. The page-table root is
then found by content: the kernel's page tables (``init_top_pgt`` and the levels below it) live in
the kernel image, near ``init_task``; a page is a root candidate when its entry for
``init_task``'s address is present, and it is trusted only when translating ``init_task``'s
virtual address through it (4-level, else 5-level) gives back the physical address it was found
at. Roots inside the kernel image are preferred (``init_top_pgt``; a process PGD also maps the
kernel but may go away). The caller then walks the task list before trusting it more.

The kernel's virtual base (``_text``) is the first page mapped in the kernel-image region
``[0xffffffff80000000, +1 GiB)``; its physical base is what that page maps to.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from scanner.acquisition.memory import MemorySource, PhysRange
from scanner.errors import UnreadableError
from scanner.guestos.linux.layout import Layout
from scanner.guestos.linux.locate import SWAPPER, find_in, read_physical
from scanner.guestos.linux.paging import ADDR_MASK, PRESENT, Mapping, PageTables, is_canonical
from scanner.guestos.problems import WalkError

KERNEL_MAP = 0xFFFF_FFFF_8000_0000
KERNEL_MAP_END = 0xFFFF_FFFF_C000_0000
MODULES_END = 0xFFFF_FFFF_FF00_0000
DEFAULT_TEXT = 0xFFFF_FFFF_8100_0000  # _text of an unrelocated x86-64 kernel
KERNEL_SPACE = 0xFFFF_8000_0000_0000
MAX_HITS = 64
MAX_ROOTS = 16
ROOT_SEARCH = 256 << 20  # the kernel's page tables are in its image, within this of init_task
ROOT_CHUNK = 16 << 20
IMAGE_SPAN = 128 << 20


@dataclass(frozen=True)
class KernelAnchor:
    """Where the running kernel is: ``init_task`` (virtual and physical), its page tables, its bases."""

    init_task: int
    init_task_phys: int
    dtb: int  # physical address of init_top_pgt
    levels: int
    text: int  # runtime virtual _text
    text_phys: int  # physical load address
    active_mm: int  # init_task.active_mm: &init_mm, or the mm the idle task borrowed

    @property
    def virtual_shift(self) -> int:
        """KASLR slide of the kernel's virtual addresses (runtime ``_text`` - default ``_text``)."""
        return self.text - DEFAULT_TEXT


def find_anchor(
    source: MemorySource, layout: Layout, hits: Sequence[int] | None = None
) -> tuple[KernelAnchor | None, list[str]]:
    """The first self-consistent kernel anchor; otherwise None and why each candidate was rejected.
    ``hits``: where ``swapper/0`` task names are (``locate``'s ``Found.swappers``), if known."""
    rejected: list[str] = []
    comm = layout["task.comm"]
    for hit in _swapper_hits(source) if hits is None else hits:
        phys = hit - comm
        try:
            anchor = _anchor_at(source, layout, phys)
        except (WalkError, UnreadableError, struct.error) as e:
            rejected.append(f"candidate at {phys:#x}: {e}")
            continue
        if anchor is not None:
            return anchor, rejected
        rejected.append(f"candidate at {phys:#x}: not self-consistent")
    if not rejected:
        rejected.append("no task named swapper/0 in memory")
    return None, rejected


def _swapper_hits(source: MemorySource) -> Iterator[int]:
    seen: set[int] = set()
    for hit in find_in(source, SWAPPER, MAX_HITS):
        if hit not in seen:  # windows overlap
            seen.add(hit)
            yield hit
            if len(seen) >= MAX_HITS:
                return


def _u64(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<Q", data, offset)[0])


def _anchor_at(source: MemorySource, layout: Layout, phys: int) -> KernelAnchor | None:
    if phys < 0:
        return None
    task = read_physical(source, phys, layout.sizes["task"])
    pid, tgid = struct.unpack_from("<ii", task, layout["task.pid"])
    me = _u64(task, layout["task.real_parent"])
    if pid or tgid or me != _u64(task, layout["task.group_leader"]) or (me & 0xFFF) != (phys & 0xFFF):
        return None
    if me < KERNEL_SPACE or not is_canonical(me):
        return None
    for levels in (4, 5):
        roots = list(_roots(source, me, phys, levels))
        if not roots:
            continue
        text, text_phys = _text(PageTables(source, roots[0], levels))
        inside = [r for r in roots if text_phys <= r < text_phys + IMAGE_SPAN]
        dtb = (inside or roots)[0]
        return KernelAnchor(me, phys, dtb, levels, text, text_phys, _u64(task, layout["task.active_mm"]))
    return None


def _roots(source: MemorySource, virtual: int, physical: int, levels: int) -> Iterator[int]:
    """Pages near ``physical`` that translate ``virtual`` to ``physical`` as a page-table root."""
    shift = 39 if levels == 4 else 48
    slot = ((virtual >> shift) & 511) * 8
    ranges = source.ranges()
    lo, hi = max(0, physical - ROOT_SEARCH) & ~0xFFF, physical + ROOT_SEARCH
    top = max(r.end for r in ranges)  # cheap first test: most non-table pages point past all RAM
    found = 0
    for r in ranges:
        start, end = max(lo, r.start + (-r.start & 0xFFF)), min(hi, r.end)
        for base in range(start, end, ROOT_CHUNK):
            n = min(ROOT_CHUNK, end - base) & ~0xFFF
            if n <= 0:
                continue
            try:
                with source.window(base, n) as view, view.cast("Q") as words:
                    entries = words[slot // 8 :: 4096 // 8].tolist()  # each page's entry for virtual
            except UnreadableError:
                continue
            for page, entry in enumerate(entries):
                if not entry & PRESENT or entry & ADDR_MASK >= top or not _in_ram(ranges, entry & ADDR_MASK):
                    continue
                if PageTables(source, base + page * 4096, levels).translate(virtual) == physical:
                    yield base + page * 4096
                    found += 1
                    if found >= MAX_ROOTS:
                        return


def _in_ram(ranges: Sequence[PhysRange], address: int) -> bool:
    return any(r.start <= address < r.end for r in ranges)


def _text(tables: PageTables) -> tuple[int, int]:
    for piece in tables.walk(KERNEL_MAP, KERNEL_MAP_END):
        if isinstance(piece, Mapping):
            return piece.virtual, piece.physical
    raise WalkError("nothing mapped in the kernel image region", KERNEL_MAP)
