"""Parse what the lab guest's init prints on the serial console.

The lines (see ``guest/init``) are::

    AVSCAN-PROC pid=<pid> ppid=<ppid> uid=<uid> comm=<comm, may hold spaces>
    AVSCAN-ROLE pid=<pid> role=marker|clean index=<n>
    AVSCAN-MAPS-BEGIN pid=<pid>  ...  /proc/<pid>/maps lines ...  AVSCAN-MAPS-END pid=<pid>
    AVSCAN-MODULES-BEGIN  ...  AVSCAN-MODULE <a /proc/modules line> ...  AVSCAN-MODULES-END
    AVSCAN-IOMEM <a /proc/iomem line, its indent kept>  (only with avscan.lime)
    AVSCAN-LIME-DONE device=<dev> | AVSCAN-LIME-ERROR device=<dev> reason=<why>
    AVSCAN-LAB-READY markers=<n> variant=<v>

Kernel messages may be interleaved; anything that does not match is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

READY = "AVSCAN-LAB-READY"
_PROC = re.compile(r"^AVSCAN-PROC pid=(\d+) ppid=(\d*) uid=(\d*) comm=(.*)$")
_ROLE = re.compile(r"^AVSCAN-ROLE pid=(\d+) role=(marker|clean) index=(\d+)$")
_BEGIN = re.compile(r"^AVSCAN-MAPS-BEGIN pid=(\d+)$")
_END = re.compile(r"^AVSCAN-MAPS-END pid=(\d+)$")
_MODULES_BEGIN, _MODULES_END = "AVSCAN-MODULES-BEGIN", "AVSCAN-MODULES-END"
# /proc/modules: name size refcount users|- state address [taint flags]
_MODULE = re.compile(
    r"^AVSCAN-MODULE (\S+) (\d+) (-?\d+) (\S+) (Live|Loading|Unloading) (0x[0-9a-f]+)(?: \((\S*)\))?\s*$"
)
_IOMEM = re.compile(r"^AVSCAN-IOMEM ([0-9a-f]+)-([0-9a-f]+) : (.*)$")
_LIME = re.compile(r"^AVSCAN-LIME-(DONE|ERROR) device=(\S*)(?: reason=(\S+))?$")
_MAP = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][ps]) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$")


@dataclass(frozen=True)
class MapEntry:
    """One line of ``/proc/<pid>/maps``: ``[start, end)`` guest virtual addresses."""

    start: int
    end: int
    perms: str
    offset: int
    path: str


@dataclass(frozen=True)
class GuestProcess:
    pid: int
    ppid: int
    uid: int
    comm: str
    role: str | None = None  # "marker", "clean" or None
    maps: tuple[MapEntry, ...] = field(default=())


@dataclass(frozen=True)
class GuestModule:
    """One line of the guest's ``/proc/modules`` (``address`` is 0 when the kernel hides it)."""

    name: str
    size: int
    refcount: int
    state: str
    address: int
    taint: str = ""


def parse_modules(text: str) -> list[GuestModule] | None:
    """The modules init listed (``/proc/modules`` order: newest first); ``None`` if it listed none.

    ``None`` means no complete AVSCAN-MODULES block (an image from before modules were listed);
    an empty list means the guest had no module loaded.
    """
    out: list[GuestModule] | None = None
    acc: list[GuestModule] = []
    inside = False
    for line in (raw.rstrip("\r") for raw in text.splitlines()):
        if line == _MODULES_BEGIN:
            inside, acc = True, []
        elif line == _MODULES_END and inside:
            inside, out = False, acc
        elif inside and (m := _MODULE.match(line)):
            acc.append(GuestModule(m[1], int(m[2]), int(m[3]), m[5], int(m[6], 16), m[7] or ""))
    return out


@dataclass(frozen=True)
class IomemRange:
    """A top-level line of the guest's ``/proc/iomem``: ``[start, end]``, both inclusive."""

    start: int
    end: int
    name: str


def parse_iomem(text: str) -> list[IomemRange]:
    """The top-level (unindented) resources of the guest's ``/proc/iomem``, in its order."""
    lines = (raw.rstrip("\r") for raw in text.splitlines())
    return [IomemRange(int(m[1], 16), int(m[2], 16), m[3].strip()) for line in lines if (m := _IOMEM.match(line))]


def lime_outcome(text: str) -> tuple[bool, str] | None:
    """``(done, why)`` of the guest's LiME dump (``why`` empty when done); ``None`` before it ended."""
    for line in (raw.rstrip("\r") for raw in text.splitlines()):
        if m := _LIME.match(line):
            return m[1] == "DONE", m[3] or ""
    return None


def _maps_by_pid(lines: list[str]) -> dict[int, tuple[MapEntry, ...]]:
    out: dict[int, tuple[MapEntry, ...]] = {}
    current: int | None = None
    acc: list[MapEntry] = []
    for line in lines:
        if m := _BEGIN.match(line):
            current, acc = int(m[1]), []
        elif (m := _END.match(line)) and current == int(m[1]):
            out[current] = tuple(acc)
            current = None
        elif current is not None and (m := _MAP.match(line)):
            acc.append(MapEntry(int(m[1], 16), int(m[2], 16), m[3], int(m[4], 16), m[7].strip()))
    return out


def parse_processes(text: str) -> list[GuestProcess]:
    """Every process init listed, with the role and maps of the marker and clean processes."""
    lines = [line.rstrip("\r") for line in text.splitlines()]
    roles = {int(m[1]): m[2] for line in lines if (m := _ROLE.match(line))}
    maps = _maps_by_pid(lines)
    procs: list[GuestProcess] = []
    for line in lines:
        if m := _PROC.match(line):
            pid = int(m[1])
            procs.append(
                GuestProcess(
                    pid=pid,
                    ppid=int(m[2] or -1),
                    uid=int(m[3] or -1),
                    comm=m[4],
                    role=roles.get(pid),
                    maps=maps.get(pid, ()),
                )
            )
    return procs


def is_ready(text: str) -> bool:
    return READY in text
