"""Batched units: many small independent pieces read together and given to YARA in one call.

A :class:`BatchUnit` is the concatenation of its :class:`Member` pieces (e.g. the two sides of
each page seam, :mod:`scanner.targets.seams`). Scanning thousands of 2 KiB pieces one YARA call
each would cost more in calls than in bytes, so the engine (``scanner.engine.batch``) scans the
whole batch once and then only the members something straddles again, alone.

Contract (what the engine guarantees to a batch):
- A rule is reported for a member only when one of its string instances lies whole inside the
  member and has bytes on both sides of the member's ``boundary`` (it *straddles* it), and the
  rule still matches when the member is scanned alone (its condition judged on the member's own
  bytes, not on its neighbours' in the batch). Everything else was the business of other units.
- Findings are per member: named by the member, addresses as the member gives them, attributed
  by :meth:`BatchUnit.member_attribute`. A batch is never looked up in or stored to the result
  cache (its results depend on where its members start, not only on its bytes).
- A rule whose condition needs no string, or is true only when a string is absent, is not
  reported from a batch: a batch member is a piece of context around a boundary, not an object.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scanner.targets.base import Unit


@dataclass(frozen=True)
class Member:
    """Bytes ``[offset, offset + size)`` of the batch; ``boundary`` is a member offset that a
    reported match must straddle; ``base`` is the address of the member's byte 0."""

    name: str
    offset: int
    size: int
    boundary: int
    base: int

    def straddled(self, offset: int, length: int) -> bool:
        """True when the match at batch ``offset`` lies inside the member and crosses ``boundary``."""
        start = offset - self.offset
        return 0 <= start < self.boundary < start + length <= self.size


class BatchUnit(Unit):
    """A unit made of independent members (see the module contract)."""

    chunkable = False
    members: Sequence[Member]

    def member_at(self, offset: int) -> Member | None:
        """The member holding batch byte ``offset``."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0 or offset >= self.members[i].offset + self.members[i].size:
            return None
        return self.members[i]

    @functools.cached_property
    def _starts(self) -> list[int]:
        return [m.offset for m in self.members]

    def member_attribute(self, member: Member, offsets: Sequence[int]) -> Mapping[str, str]:
        """Finding context for a match of ``member`` at member ``offsets`` (first: the straddling one)."""
        return {}
