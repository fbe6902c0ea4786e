"""Volumes on a disk: MBR/GPT partitions and LVM2 logical volumes, as named streams.

Contract: :func:`find_volumes` returns every volume it could open, and a :class:`VolumeProblem`
for every one it could not (a damaged partition table, an LVM2 group whose metadata does not
parse); a disk with no partition table is one volume, the whole disk. Nesting is bounded: a
partition may hold an LVM2 physical volume, whose logical volumes are not searched further.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import BinaryIO

from scanner.acquisition.disk.errors import unavailable

log = logging.getLogger(__name__)

MAX_PARTITIONS = 128
MAX_GPT_ENTRIES = 4096  # UEFI tables hold 128; tools allow more, none this many
LVM_TYPES = {0x8E, "E6D6D379-F507-44C2-A23C-238F2A3DF928"}  # MBR type, GPT "Linux LVM" GUID


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
    try:
        from dissect.volume.disk import Disk  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.volume", e) from e
    volumes: list[Volume] = []
    problems: list[VolumeProblem] = []
    partitions = []
    implausible = _implausible_gpt(disk)
    if implausible:  # never handed to the parser: it would loop over the claimed entries
        problems.append(VolumeProblem("disk", size, implausible))
    try:
        disk.seek(0)
        partitions = [] if implausible else list(Disk(disk).partitions)
    except Exception as e:  # no or damaged table: the whole disk may be a filesystem or an LVM2 PV
        log.debug("no partition table: %s", e)
    if not partitions:
        _add(Volume("disk", disk, size, "whole disk"), volumes, problems)
        return volumes, problems
    for index, part in enumerate(partitions[:MAX_PARTITIONS]):
        name = f"p{part.number if part.number is not None else index + 1}"
        if part.type in (0x05, 0x0F, 0x85):  # the extended partition's logicals are listed themselves
            continue
        try:
            stream = part.open()
        except Exception as e:
            problems.append(VolumeProblem(name, int(part.size or 0), f"partition does not open: {e}"))
            continue
        described = f"partition {part.number} ({part.type_str if hasattr(part, 'type_str') else part.type})"
        _add(Volume(name, stream, int(part.size), described), volumes, problems)
    if len(partitions) > MAX_PARTITIONS:
        problems.append(VolumeProblem("disk", 0, f"more than {MAX_PARTITIONS} partitions; the rest not read"))
    return volumes, problems


def _implausible_gpt(disk: BinaryIO) -> str:
    """Why the GPT header the protective MBR points at cannot be real (too many or oddly sized
    partition entries: found by fuzzing, a header claiming 15 million entries of 0 bytes made
    the parser loop), or "" when there is none or it is plausible."""
    try:
        disk.seek(0)
        mbr = disk.read(512)
    except Exception:
        return ""
    for slot in range(4):
        entry = mbr[446 + 16 * slot : 462 + 16 * slot]
        if len(entry) < 16 or entry[4] != 0xEE:
            continue
        lba = int.from_bytes(entry[8:12], "little")
        for sector in (512, 4096):
            try:
                disk.seek(lba * sector)
                header = disk.read(92)
            except Exception as e:  # past the end of the image: no header there
                log.debug("no GPT header at LBA %d x %d: %s", lba, sector, e)
                continue
            if len(header) < 92 or header[:8] != b"EFI PART":
                continue
            count, width = int.from_bytes(header[80:84], "little"), int.from_bytes(header[84:88], "little")
            if count > MAX_GPT_ENTRIES or not 128 <= width <= 4096 or width % 8:
                return f"GPT header claims {count} partition entries of {width} bytes; not read"
    return ""


def _add(volume: Volume, volumes: list[Volume], problems: list[VolumeProblem]) -> None:
    """Add ``volume``, or the logical volumes inside it when it is an LVM2 physical volume."""
    if not _is_lvm(volume.stream):
        volumes.append(volume)
        return
    try:
        from dissect.volume.lvm import LVM2  # type: ignore[import-untyped,unused-ignore]

        volume.stream.seek(0)
        group = LVM2(volume.stream).volume_group
    except Exception as e:
        problems.append(VolumeProblem(volume.name, volume.size, f"LVM2 metadata does not parse: {e}"))
        return
    for lv in group.logical_volumes.values():
        name = f"lvm/{group.name}/{lv.name}"
        try:
            stream = lv.open()
            size = _stream_size(stream)
        except Exception as e:
            problems.append(VolumeProblem(name, 0, f"logical volume does not open: {e}"))
            continue
        volumes.append(Volume(name, stream, size, f"LVM2 logical volume on {volume.name}"))


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
