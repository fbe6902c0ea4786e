"""The bounded walk over one filesystem: regular files out, every problem reported.

Contract:
- Yields :class:`GuestFile` for each regular file and :class:`WalkProblem` for everything that was
  not offered (an unreadable directory, a directory loop, a limit), in a stable order (names
  sorted within a directory).
- Never raises for a damaged structure: any parser exception while listing a directory or
  looking at an entry becomes a ``WalkProblem`` naming the path; entries read before the failure
  are still walked.
- Bounded: ``max_depth`` directory levels, ``max_entries`` entries in all (files, directories and
  the rest), ``max_dir_entries`` per directory; symbolic links are never followed; a directory seen
  before (same volume and inode/record) is not entered again, so a looping directory cannot hang
  the walk. Keys are scoped by the volume: two filesystems on one disk share inode numbers.
- ``reached`` holds the ``(volume, key)`` of every regular file the walk yielded (and of every
  damaged entry it reported): the sweep by allocation (``Node.allocated``) scans what is
  allocated but not in it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from scanner.acquisition.disk.filesystems import Node
from scanner.verdicts import GapKind


@dataclass(frozen=True)
class WalkLimits:
    max_depth: int = 64
    max_entries: int = 1_000_000
    max_dir_entries: int = 100_000


@dataclass(frozen=True)
class GuestFile:
    path: str  # absolute inside the filesystem, "/" separated
    node: Node
    size: int


@dataclass(frozen=True)
class WalkProblem:
    path: str
    size: int
    kind: GapKind
    reason: str


def describe(e: BaseException) -> str:
    """A parser exception as a short reason (type and message)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class Walker:
    """One walk; ``entries`` counts what it looked at (for limits and reporting)."""

    def __init__(self, limits: WalkLimits) -> None:
        self.limits = limits
        self.entries = 0
        self.reached: set[tuple[str, Hashable]] = set()
        self._seen: set[tuple[str, Hashable]] = set()
        self._stopped = False
        self._volume = ""

    @property
    def stopped(self) -> bool:
        """The entry limit was reached: nothing more may be offered."""
        return self._stopped

    def walk(self, root: Node, volume: str = "") -> Iterator[GuestFile | WalkProblem]:
        self._volume = volume
        self._seen.add((volume, root.key))
        stack: list[tuple[Node, str, int]] = [(root, "", 0)]
        while stack:
            node, path, depth = stack.pop()
            if self._stopped:
                yield WalkProblem(path or "/", 0, GapKind.SKIPPED_LIMIT, "not listed: entry limit reached")
                continue
            children, problem = self._list(node, path or "/")
            if problem:
                yield problem
            subdirs: list[tuple[Node, str, int]] = []
            for child in children:
                child_path = f"{path}/{child.name}"
                item = self._visit(child, child_path, depth, subdirs)
                if item is not None:
                    yield item
            stack.extend(reversed(subdirs))

    def _list(self, node: Node, path: str) -> tuple[list[Node], WalkProblem | None]:
        children: list[Node] = []
        problem = None
        try:
            for child in node.children():
                children.append(child)
                if len(children) >= self.limits.max_dir_entries:
                    detail = f"more than {self.limits.max_dir_entries} entries; the rest not listed"
                    problem = WalkProblem(path, 0, GapKind.SKIPPED_LIMIT, detail)
                    break
        except Exception as e:  # a damaged directory: keep what was read, report the rest
            problem = WalkProblem(path, 0, GapKind.UNREADABLE, f"directory not fully readable: {describe(e)}")
        children.sort(key=lambda c: c.name)
        return children, problem

    def count(self) -> bool:
        """One more entry found outside the walk (the sweep); False once the limit is reached."""
        self.entries += 1
        if self.entries > self.limits.max_entries:
            self._stopped = True
        return not self._stopped

    def _visit(  # noqa: PLR0911 - one return per kind of entry reads best
        self, child: Node, path: str, depth: int, subdirs: list[tuple[Node, str, int]]
    ) -> GuestFile | WalkProblem | None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            self._stopped = True
            detail = f"more than {self.limits.max_entries} entries in the filesystem"
            return WalkProblem(path, child.size, GapKind.SKIPPED_LIMIT, detail)
        if child.kind == "file":
            self.reached.add((self._volume, child.key))
            return GuestFile(path, child, child.size)
        if child.kind == "damaged":
            self.reached.add((self._volume, child.key))  # reported as a gap: the sweep need not repeat it
            return WalkProblem(path, 0, GapKind.UNREADABLE, child.problem)
        if child.kind != "dir":
            return None  # symbolic links are not followed; devices, FIFOs, sockets hold no data
        if (self._volume, child.key) in self._seen:
            return WalkProblem(path, 0, GapKind.UNREADABLE, "directory loop: this directory was already walked")
        if depth + 1 >= self.limits.max_depth:
            return WalkProblem(path, 0, GapKind.SKIPPED_LIMIT, f"deeper than {self.limits.max_depth}")
        self._seen.add((self._volume, child.key))
        subdirs.append((child, path, depth + 1))
        return None
