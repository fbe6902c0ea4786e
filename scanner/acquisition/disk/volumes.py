"""Volumes on a disk: MBR/GPT partitions and LVM2 logical volumes, as named streams.

Contract: :func:`find_volumes` returns every volume it could open, and a :class:`VolumeProblem`
for every one it could not (a damaged partition table, an LVM2 group whose metadata does not
parse, a physical volume of a group that is not on this disk); a disk with no partition table is
one volume, the whole disk. No volume is dropped for being small.

Names are the ones Linux gives (what an examiner compares with ``lsblk``): primary MBR
partitions by their slot (``p1``..``p4``), logical ones ``p5``, ``p6``... in the order of the EBR
chain (``block/partitions/msdos.c``), which is read here, bounded and loop-checked, not by
dissect (it numbers logicals after the primaries and recurses without bound). LVM2 physical
volumes on the disk are grouped by volume group and opened together, so a group spanning several
partitions and thin volumes read whole; the pool's own and hidden sub-volumes (``_tdata``,
``_tmeta``) are not separate volumes. Nesting is bounded: logical volumes are not searched further.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from scanner.acquisition.disk.errors import unavailable

log = logging.getLogger(__name__)

MAX_PARTITIONS = 128
SECTOR = 512
EXTENDED = (0x05, 0x0F, 0x85)
SMALL = 64 * 1024
MAX_GPT_ENTRIES = 4096  # the spec's minimum array is 128 entries; tools write 128


@dataclass
class Volume:
    """One volume: ``name`` is stable and shown to users (``disk``, ``p2``, ``lvm/vg0/root``)."""

    name: str
    stream: BinaryIO
    size: int
    description: str


@dataclass(frozen=True)
class VolumeProblem:
    name: str
    size: int
    reason: str


def find_volumes(disk: BinaryIO, size: int) -> tuple[list[Volume], list[VolumeProblem]]:
    """The volumes on ``disk`` (``size`` bytes) and the ones that could not be opened."""
    partitions, problems = _partitions(disk, size)
    volumes: list[Volume] = []
    groups: dict[str, list[Volume]] = {}
    for volume in partitions:
        group = _lvm_group(volume.stream)
        if group is None:
            volumes.append(volume)
        else:
            groups.setdefault(group, []).append(volume)
    for members in groups.values():
        _open_group(members, volumes, problems)
    return volumes, problems


def _partitions(disk: BinaryIO, size: int) -> tuple[list[Volume], list[VolumeProblem]]:
    try:
        from dissect.volume.disk import Disk  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.volume", e) from e
    problems: list[VolumeProblem] = []
    entries = _gpt_entries(disk)
    if entries > MAX_GPT_ENTRIES:
        reason = f"GPT claims {entries} partition entries (more than {MAX_GPT_ENTRIES}): table not read"
        problems.append(VolumeProblem("disk", 0, reason))
        return [Volume("disk", _small(disk, size), size, "whole disk")], problems
    scheme: Any = None
    try:
        disk.seek(0)
        table = Disk(disk)
        found = list(table.partitions)
        scheme = table.scheme if type(table.scheme).__name__ == "MBR" else None
    except Exception as e:  # no or damaged table: the whole disk may be a filesystem or an LVM2 PV
        log.debug("no partition table: %s", e)
        found = []
        if _extended_mbr(disk):  # dissect follows a looping EBR chain until the stack ends, then gives up
            scheme = _Table(disk)
    if scheme is not None:
        found = _mbr(scheme, disk, size, problems)
    if not found:
        return [Volume("disk", _small(disk, size), size, "whole disk")], problems
    volumes = []
    for part in found[:MAX_PARTITIONS]:
        if part.type in EXTENDED:
            continue
        name = f"p{part.number}"
        try:
            stream = part.open()
        except Exception as e:
            problems.append(VolumeProblem(name, int(part.size or 0), f"partition does not open: {e}"))
            continue
        described = f"partition {part.number} ({getattr(part, 'type_str', part.type)})"
        volumes.append(Volume(name, stream, int(part.size), described))
    if len(found) > MAX_PARTITIONS:
        problems.append(VolumeProblem("disk", 0, f"more than {MAX_PARTITIONS} partitions; the rest not read"))
    return volumes, problems


def _mbr(scheme: Any, disk: BinaryIO, size: int, problems: list[VolumeProblem]) -> list[Any]:
    """MBR partitions numbered as Linux numbers them (see the module docstring)."""
    from dissect.volume.disk.partition import Partition  # type: ignore[import-untyped,unused-ignore]

    def part(number: int, start: int, count: int, kind: int) -> Any:
        return Partition(disk=scheme, number=number, offset=start * SECTOR, size=count * SECTOR, type=kind)

    found = []
    entries = _entries(disk, 0)
    for slot, (kind, start, count) in enumerate(entries):
        if kind and count:
            found.append(part(slot + 1, start, count, kind))
    extended = next(((s, c) for k, s, c in entries if k in EXTENDED and c), None)
    if extended is None:
        return found
    first, number, ebr, seen = extended[0], 5, extended[0], set()
    while len(found) < MAX_PARTITIONS and ebr * SECTOR < size:
        seen.add(ebr)
        try:
            links = _entries(disk, ebr * SECTOR)
        except Exception as e:
            problems.append(VolumeProblem(f"p{number}", 0, f"extended boot record at sector {ebr} unreadable: {e}"))
            break
        for kind, start, count in links:
            if kind and count and kind not in EXTENDED:
                found.append(part(number, ebr + start, count, kind))
                number += 1
        link = next((s for k, s, c in links if k in EXTENDED and c), None)
        if link is None:
            break
        ebr = first + link
        if ebr in seen:
            problems.append(VolumeProblem("disk", 0, f"extended partition chain loops back to sector {ebr}; stopped"))
            break
    return found


def _gpt_entries(disk: BinaryIO) -> int:
    """The partition entry count a GPT header at LBA 1 claims (0 if there is none): dissect walks
    every claimed entry, so 2**32 of them over a sparse disk would never end."""
    try:
        disk.seek(SECTOR)
        header = disk.read(SECTOR)
    except Exception:
        return 0
    if len(header) < 88 or header[:8] != b"EFI PART":
        return 0
    return int(struct.unpack_from("<I", header, 80)[0])


def _small(disk: BinaryIO, size: int) -> BinaryIO:
    """A disk smaller than the 64 KiB filesystem detection reads, as a view whose reads stop at its
    end (that read is not a truncation); a larger one unchanged, so a table past the end stays loud."""
    if size >= SMALL:
        return disk
    from dissect.util.stream import RangeStream  # type: ignore[import-untyped,unused-ignore]

    return RangeStream(disk, 0, size)  # type: ignore[no-any-return]


def _extended_mbr(disk: BinaryIO) -> bool:
    """An MBR with an extended partition entry (a filesystem's boot sector has none)."""
    try:
        return any(kind in EXTENDED and count for kind, _, count in _entries(disk, 0))
    except Exception:
        return False


@dataclass
class _Table:
    """What a dissect ``Partition`` needs of its table: the disk it opens ranges of."""

    fh: BinaryIO


def _entries(disk: BinaryIO, offset: int) -> list[tuple[int, int, int]]:
    """(type, start sector, sector count) of the four entries of the MBR or EBR at ``offset``."""
    disk.seek(offset)
    sector = disk.read(SECTOR)
    if len(sector) < SECTOR or sector[510:512] != b"\x55\xaa":
        raise ValueError(f"no boot signature at {offset:#x}")
    return [(sector[446 + 16 * i + 4], *struct.unpack_from("<II", sector, 446 + 16 * i + 8)) for i in range(4)]


def _lvm_group(stream: BinaryIO) -> str | None:
    """The volume group of the LVM2 physical volume in ``stream``, or None when it is not one."""
    if not _is_lvm(stream):
        return None
    try:
        from dissect.volume.lvm.physical import LVM2Device  # type: ignore[import-untyped,unused-ignore]

        stream.seek(0)
        metadata = LVM2Device(stream).metadata
        return next((str(k) for k, v in metadata.items() if isinstance(v, dict)), "")
    except Exception:
        return ""  # a PV whose metadata does not parse: reported when its group is opened


def _open_group(members: list[Volume], volumes: list[Volume], problems: list[VolumeProblem]) -> None:
    """The logical volumes of one volume group, read over all its physical volumes on this disk."""
    where = ", ".join(m.name for m in members)
    try:
        from dissect.volume.lvm import LVM2  # type: ignore[import-untyped,unused-ignore]

        for m in members:
            m.stream.seek(0)
        group = LVM2([m.stream for m in members]).volume_group
    except Exception as e:
        for m in members:
            problems.append(VolumeProblem(m.name, m.size, f"LVM2 metadata does not parse: {e}"))
        return
    for pv in group.physical_volumes.values():
        if pv.dev is None:
            reason = f"physical volume {pv.name} ({pv.device or pv.id}) of group {group.name} is not on this disk"
            problems.append(VolumeProblem(f"lvm/{group.name}", 0, f"{reason}: logical volumes using it not read"))
    for lv in group.logical_volumes.values():
        if not lv.is_visible or lv.type == "thin-pool":
            continue  # read through the thin volumes and the LVs that use them
        name = f"lvm/{group.name}/{lv.name}"
        try:
            stream = lv.open()
            size = _stream_size(stream)
        except Exception as e:
            problems.append(VolumeProblem(name, 0, f"logical volume ({lv.type}) does not open: {e}"))
            continue
        volumes.append(Volume(name, stream, size, f"LVM2 {lv.type} logical volume on {where}"))


def _is_lvm(stream: BinaryIO) -> bool:
    """An LVM2 label (``LABELONE`` ... ``LVM2 001``) in one of the first four sectors."""
    try:
        stream.seek(0)
        head = stream.read(4 * 512)
    except Exception:
        return False
    return any(head[i : i + 8] == b"LABELONE" and head[i + 24 : i + 32] == b"LVM2 001" for i in range(0, 2048, 512))


def _stream_size(stream: BinaryIO) -> int:
    size = getattr(stream, "size", None)
    if isinstance(size, int):
        return size
    pos = stream.seek(0, 2)
    stream.seek(0)
    return pos
