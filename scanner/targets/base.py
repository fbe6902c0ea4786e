"""The target interface: what a scan is pointed at, and the units it is cut into.

A :class:`Target` turns a request (files, a memory image, later a live guest, a disk image, a
vCenter VM) into :class:`Unit` objects, one per thing YARA should see whole, plus
:class:`Skipped` records for what it decided not to or could not offer. The engine owns
chunking, timeouts and coverage; a target only says what exists and how to read it.

Contract for implementations:
- ``plan()`` never raises for a single bad member (an unreadable file, a hole in memory): it
  yields a ``Skipped`` with the reason instead. It raises :class:`~scanner.errors.SourceError`
  only when the target as a whole cannot be opened.
- ``Unit.window(offset, length)`` returns a zero-copy view where it can (an mmap), valid only
  inside the ``with`` block; an unreadable range raises :class:`~scanner.errors.UnreadableError`.
- Walks over guest- or user-controlled structures are bounded (depth, count, size).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from scanner.verdicts import GapKind


class Unit(abc.ABC):
    """One thing YARA sees as a whole: a file, a physical memory range, a process region.

    ``chunkable`` units (memory) may be scanned in overlapping windows; others (files) are
    scanned in one piece so that ``filesize`` and the ``pe``/``elf`` modules keep their meaning.
    """

    name: str
    kind: str
    size: int
    base: int = 0  # address of byte 0 in the target's address space (physical, virtual...)
    chunkable: bool = False
    context: Mapping[str, str] = {}
    externals: Mapping[str, str] = {}

    @abc.abstractmethod
    def window(self, offset: int, length: int) -> AbstractContextManager[memoryview]:
        """A read-only view of ``length`` bytes at ``offset`` in the unit."""

    def holes(self) -> Sequence[tuple[int, int]]:
        """``[(start, end), ...]`` unit offsets known to be all zero without reading them."""
        return ()

    def physical(self, offset: int) -> int | None:
        """The guest physical address of byte ``offset``, if this unit maps to guest memory."""
        return None

    def finding_context(self) -> Mapping[str, str]:
        """Facts attached to each finding in this unit (computed only when something matched)."""
        return self.context

    def attribute(self, offsets: Sequence[int]) -> Mapping[str, str]:
        """Facts about a finding matched at ``offsets`` of this unit (e.g. the owning processes)."""
        return {}

    def matched(self) -> None:  # noqa: B027 - optional hook
        """A window of this unit matched (called once, on the engine's planner thread, before the
        unit is done): work :meth:`attribute` will need may start now, in the background. Must
        not block."""

    def identity(self) -> bytes | None:
        """Bytes that are equal only while the unit's content is unchanged, vouched for by the
        appliance without reading the content (``scanner.targets.identity``), or None (the
        default: the content is hashed). Asked again after a read: None then means the content
        may have moved under it, and nothing is remembered."""
        return None


@dataclass(frozen=True)
class Skipped:
    """Something the target did not offer for scanning, and why.

    ``gap`` False means it is accounted as skipped but does not make the scan INCOMPLETE
    (e.g. an exclusion the user configured and policy says not to count).
    """

    name: str
    size: int
    kind: GapKind
    detail: str
    gap: bool = True


@dataclass(frozen=True)
class TargetSpec:
    """A serialisable description of a target: stored with the job and rebuilt after restart."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind}({shown})"


class Target(abc.ABC):
    """A scan target. Subclasses register one line in ``scanner.targets.REGISTRY``."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def plan(self) -> Iterator[Unit | Skipped]:
        """Units to scan and things skipped, in a stable order."""

    def deferred_plan(self) -> Iterator[Unit | Skipped]:
        """More units, planned on a thread of their own while :meth:`plan`'s units are scanned (for
        planning that is slow and needs no answer before the scan starts, e.g. walking a guest's
        processes); scanned after them. Default: none."""
        return iter(())

    def finish(self) -> None:  # noqa: B027 - optional hook
        """Scanning is over (all windows done): release consistency holds, e.g. resume a guest."""

    def details(self) -> Mapping[str, str]:
        """Facts about the acquisition to record in the verdict (mode, pause time...)."""
        return {}

    def accounting(self) -> Mapping[str, int]:
        """Counts from the data's own bookkeeping against what the plan reached, asked after the
        scan (``Coverage.accounting``): e.g. ``p1.files_allocated`` and ``p1.files_reached``. A
        target that finds more allocated than it reached must also yield units or gaps for the
        difference; these counts only let a reader check that it did."""
        return {}

    def identity(self) -> bytes | None:
        """Like :meth:`Unit.identity` for the whole target, asked before ``plan()`` and again
        after the scan: equal identities promise the same plan, units and bytes, so the engine
        may give back a complete earlier result without planning. None (the default) for
        anything live or guest-described."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files, mappings, snapshots. Called once, also after failures."""

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
