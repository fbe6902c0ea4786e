"""What OS-aware walkers report when guest data is impossible: recorded, bounded, never raised past them.

Guest memory is hostile. A walker that meets a pointer it cannot follow, a list that loops, a
count past its limit, raises :class:`WalkError` inside; the walk catches it at the level of one
object (a task, a VMA tree) and records a :class:`Problem`. The target turns every problem into a
gap, so a scan that could not see everything is INCOMPLETE with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from scanner.errors import ScannerError


class WalkError(ScannerError):
    """A guest structure could not be followed; ``address`` is where (virtual, 0 if unknown)."""

    code = "DATA_LOSS"

    def __init__(self, message: str, address: int = 0) -> None:
        super().__init__(f"{message} (at {address:#x})" if address else message)
        self.address = address


@dataclass(frozen=True)
class Problem:
    """One thing a walker could not do: ``what`` it was walking, and why."""

    what: str
    reason: str

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


@dataclass(frozen=True)
class Limits:
    """Bounds on every walk over guest structures."""

    max_tasks: int = 65536
    max_vmas: int = 100_000
    max_tree_nodes: int = 200_000
    max_tree_depth: int = 32
    max_modules: int = 4096
    max_path_depth: int = 64
    max_cmdline: int = 4096
    max_string: int = 4096
    max_pages: int = 1 << 22
