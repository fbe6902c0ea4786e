"""Where a QEMU guest's RAM is: guest-physical ranges, the RAM block behind each, its host address.

QEMU tells it over QMP: the memory backends (``qom-list /objects``, ``query-memdev``), the
guest-physical layout of the ``memory`` address space (HMP ``info mtree -f``: RAM below the PCI
hole, RAM above 4 GiB, DIMMs, each an alias into a backend at an offset) and, for one address of
each backend, its host virtual address in QEMU's process (HMP ``gpa2hva``).

Contract: :func:`parse_flatview` keeps only ranges backed by the named RAM blocks (guest RAM,
never device memory, ROMs or MMIO) and merges ranges that are contiguous both in guest-physical
space and inside their block. The parse is bounded (``MAX_LINES`` lines, ``MAX_RANGES`` ranges)
and every number is checked; anything QEMU says that does not fit raises :class:`SourceError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scanner.errors import SourceError

Execute = Callable[[str, dict[str, Any]], Any]  # one QMP command
MEMORY_BACKEND = "child<memory-backend-"
MAX_LINES = 200_000
MAX_RANGES = 1024
_RANGE_RE = re.compile(
    r"^\s+([0-9a-f]{1,16})-([0-9a-f]{1,16}) \(prio -?\d+, ([a-z/]+)\): (\S+)(?: @([0-9a-f]{1,16}))?"
)
_HVA_RE = re.compile(r"Host virtual address for (0x[0-9a-f]+) \((\S+)\) is (0x[0-9a-f]+)")


@dataclass(frozen=True)
class RamRange:
    """``length`` bytes of guest RAM at guest-physical ``physical``: bytes ``offset..`` of RAM
    block ``block``, at host virtual address ``host`` in QEMU's process (0 until resolved)."""

    physical: int
    length: int
    block: str
    offset: int
    host: int = 0


@dataclass(frozen=True)
class RamLayout:
    """QEMU's process id, its guest RAM ranges (sorted) and each RAM block's size."""

    pid: int
    ranges: tuple[RamRange, ...]
    block_sizes: Mapping[str, int]

    @property
    def mapped(self) -> int:
        return sum(r.length for r in self.ranges)


def parse_flatview(text: str, blocks: Iterable[str], address_space: str = "memory") -> list[RamRange]:
    """Guest RAM ranges of ``address_space`` in ``info mtree -f`` output, merged, sorted."""
    wanted = set(blocks)
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise SourceError("qmp", f"info mtree -f: {len(lines)} lines (limit {MAX_LINES})")
    found: list[RamRange] = []
    inside = False
    for line in lines:
        if line.startswith("FlatView"):
            inside = False
        elif line.strip().startswith(f'AS "{address_space}",'):
            inside = True
        elif inside and (m := _RANGE_RE.match(line)):
            first, last, kind, name, offset = m.groups()
            if name not in wanted or kind == "i/o":
                continue
            start, end = int(first, 16), int(last, 16) + 1
            if end <= start:
                raise SourceError("qmp", f"info mtree -f: empty range {line.strip()!r}")
            found.append(RamRange(start, end - start, name, int(offset or "0", 16)))
            if len(found) > MAX_RANGES:
                raise SourceError("qmp", f"info mtree -f: more than {MAX_RANGES} RAM ranges")
    return merged(found)


def merged(ranges: Iterable[RamRange]) -> list[RamRange]:
    out: list[RamRange] = []
    for r in sorted(ranges, key=lambda r: r.physical):
        last = out[-1] if out else None
        if (
            last is not None
            and last.block == r.block
            and last.physical + last.length == r.physical
            and last.offset + last.length == r.offset
        ):
            out[-1] = RamRange(last.physical, last.length + r.length, last.block, last.offset)
        elif last is not None and r.physical < last.physical + last.length:
            raise SourceError("qmp", f"info mtree -f: overlapping RAM ranges at {r.physical:#x}")
        else:
            out.append(r)
    return out


def parse_gpa2hva(text: str, physical: int) -> tuple[str, int]:
    """(block name, host address) from HMP ``gpa2hva`` output for ``physical``."""
    m = _HVA_RE.search(text)
    if m is None or int(m.group(1), 16) != physical:
        raise SourceError("qmp", f"gpa2hva {physical:#x}: {text.strip()[:200]!r}")
    return m.group(2), int(m.group(3), 16)


def check_blocks(ranges: Iterable[RamRange], sizes: Mapping[str, int]) -> None:
    """Every range lies inside its block's size as ``query-memdev`` states it."""
    for r in ranges:
        size = sizes.get(r.block)
        if size is not None and r.offset + r.length > size:
            raise SourceError("qmp", f"RAM range {r.physical:#x} runs past the end of block {r.block} ({size} bytes)")


def memory_backends(execute: Execute) -> dict[str, str]:
    """QOM id -> type (``memory-backend-ram``, ``-file``, ``-memfd``) of every memory backend."""
    objects = execute("qom-list", {"path": "/objects"})
    return {
        str(o["name"]): str(o["type"])[len("child<") : -1]
        for o in objects
        if str(o.get("type", "")).startswith(MEMORY_BACKEND)
    }


def query_layout(execute: Execute, pid: int) -> RamLayout:
    """The RAM layout of the QEMU process ``pid`` as its monitor (``execute``) describes it."""

    def hmp(command: str) -> str:
        return str(execute("human-monitor-command", {"command-line": command}))

    blocks = memory_backends(execute)
    if not blocks:
        raise SourceError("qmp", "QEMU reports no memory backend (QEMU older than 5.0?)")
    sizes = {str(d.get("id")): int(d["size"]) for d in execute("query-memdev", {}) if d.get("id")}
    ranges = parse_flatview(hmp("info mtree -f"), blocks)
    if not ranges:
        raise SourceError("qmp", f"no guest RAM of blocks {', '.join(sorted(blocks))} in QEMU's memory map")
    check_blocks(ranges, sizes)
    bases: dict[str, int] = {}
    resolved: list[RamRange] = []
    for r in ranges:  # each range's host address, checked against its block's base
        block, host = parse_gpa2hva(hmp(f"gpa2hva {r.physical:#x}"), r.physical)
        if block != r.block or bases.setdefault(block, host - r.offset) != host - r.offset:
            raise SourceError("qmp", f"gpa2hva {r.physical:#x}: {block} at {host:#x} contradicts info mtree")
        resolved.append(RamRange(r.physical, r.length, r.block, r.offset, host))
    return RamLayout(pid, tuple(resolved), {b: sizes.get(b, 0) for b in blocks})
