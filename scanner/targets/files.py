"""Files and directories on the appliance's own filesystem.

Each regular file is one unit, scanned whole (real YARA file semantics). A symbolic link given
explicitly is resolved and what it points to is scanned (as clamscan does); links met in a walk
are not followed. Special files (devices, FIFOs, sockets) are never opened for reading (every
open goes through ``scanner.acquisition.hostfile``: non-blocking, no links, fstat-checked).
A regular file whose size says 0 is read to EOF, bounded by ``max_file_size`` (pseudo-files such
as ``/proc/PID/environ`` report 0 and hold data): its bytes are what is scanned, never "empty".
Walks are bounded in depth and file count; whatever is not scanned is reported as
:class:`Skipped` with its reason.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath

from scanner.acquisition.hostfile import open_host_file, read_to_eof
from scanner.acquisition.mapped import file_window
from scanner.errors import InvalidArgument, SourceError, UnreadableError
from scanner.targets.base import Skipped, Target, Unit
from scanner.targets.buffer import BufferUnit
from scanner.targets.identity import Stamp, digest, stamp
from scanner.verdicts import GapKind


@dataclass(frozen=True)
class FilePolicy:
    """Limits and exclusions for file scanning (from config)."""

    max_file_size: int = 256 * 1024 * 1024
    max_files: int = 1_000_000
    max_depth: int = 64
    exclude_globs: tuple[str, ...] = ()
    exclude_extensions: tuple[str, ...] = ()
    exclusions_are_gaps: bool = False  # policy: does an excluded file make the scan INCOMPLETE?
    disk_backing_dirs: tuple[str, ...] = ()  # disk images may refer to files here, besides their own directory
    disk_max_table_bytes: int = 64 * 1024 * 1024  # ceiling for one container's tables in memory
    exclude_regex: tuple[str, ...] = ()  # clamscan --exclude: a file whose path matches is not scanned
    exclude_dir_regex: tuple[str, ...] = ()  # clamscan --exclude-dir: a directory whose path matches

    def excluded_dir(self, path: str) -> Skipped | None:
        """The skip record of a directory an ``exclude_dir_regex`` matches, or None."""
        for pattern in self.exclude_dir_regex:
            if re.search(pattern, path):
                return Skipped(path, 0, GapKind.SKIPPED_POLICY, f"excluded by {pattern}", self.exclusions_are_gaps)
        return None

    def skip(self, name: str, path: str, size: int) -> Skipped | None:
        """Why policy skips the file at ``path`` (a host or guest path), or None to scan it."""
        excluded = self.exclusion(path)
        if excluded:
            return Skipped(name, size, GapKind.SKIPPED_POLICY, excluded, self.exclusions_are_gaps)
        if size > self.max_file_size:
            return Skipped(name, size, GapKind.SKIPPED_LIMIT, f"larger than max_file_size {self.max_file_size}")
        return None

    def exclusion(self, path: str) -> str:
        """The exclusion (extension or glob) that matches ``path``, or ""."""
        ext = PurePosixPath(path).suffix.lstrip(".").lower()
        if ext and ext in {e.lstrip(".").lower() for e in self.exclude_extensions}:
            return f"excluded extension .{ext}"
        for pattern in self.exclude_globs:
            if fnmatch.fnmatch(path, pattern):
                return f"excluded by {pattern}"
        for pattern in self.exclude_regex:
            if re.search(pattern, path):
                return f"excluded by {pattern}"
        return ""


class FileUnit(Unit):
    """A host file. Its stamp (synced, then stat'ed: ``scanner.targets.identity``), taken the first
    time the cache asks for its identity and before any read, gives it an identity when settled,
    so a rescan of an unchanged file looks its result up without reading it. Every later open
    checks the descriptor against the stamp; a file that changed loses its identity for this scan.
    Without a cache nothing asks, and nothing is stamped."""

    kind = "file"

    def __init__(self, path: str, size: int, name: str | None = None) -> None:
        self.path = path
        self.name = name or path
        self.size = size
        self.stamp: Stamp | None = None
        self._stamped = False
        self._changed = False
        base = os.path.basename(path)
        self.externals = {
            "filename": base,
            "filepath": os.path.dirname(path),
            "extension": os.path.splitext(base)[1].lstrip(".").lower(),
            "filetype": "",
            "owner": "",
        }

    def window(self, offset: int, length: int) -> AbstractContextManager[memoryview]:
        return _opened_window(self.path, offset, length, self._check)

    def _check(self, fd: int) -> None:
        if self.stamp is not None and not self.stamp.same_file(os.fstat(fd)):
            self._changed = True

    def identity(self) -> bytes | None:
        if not self._stamped:
            self.stamp, self._stamped = stamp(self.path, follow=False), True
        if self.stamp is None or self._changed or not self.stamp.settled:
            return None
        return digest("file", self.path, self.stamp.key)

    def finding_context(self) -> Mapping[str, str]:
        """The file's SHA-256 (as scanned) and size, for evidence and SIEM lookups."""
        try:
            with self.window(0, self.size) as view:
                return {"sha256": hashlib.sha256(view).hexdigest(), "size": str(self.size)}
        except UnreadableError as e:
            return {"sha256_error": e.reason, "size": str(self.size)}


class PseudoFileUnit(BufferUnit):
    """A file whose size said 0 but which held bytes when read to EOF (a ``/proc`` file): the
    bytes read are the unit, with the file's name and externals."""

    kind = "file"

    def __init__(self, path: str, data: bytes) -> None:
        super().__init__(path, data)
        self.externals = FileUnit(path, len(data)).externals


@contextmanager
def _opened_window(
    path: str, offset: int, length: int, check: Callable[[int], None] | None = None
) -> Iterator[memoryview]:
    try:
        fd = open_host_file(path, "file").fd
    except SourceError as e:
        raise UnreadableError(path, offset, length, e.message.removeprefix(f"{path}: ")) from e
    try:
        if check is not None:
            check(fd)
        with file_window(fd, offset, length, path) as view:
            yield view
    finally:
        os.close(fd)


class FileTarget(Target):
    """Regular files given directly or found under directories."""

    kind = "files"

    def __init__(self, paths: Sequence[str], policy: FilePolicy | None = None) -> None:
        if not paths:
            raise InvalidArgument("target.files.paths", "at least one path is required")
        self.paths = [os.path.abspath(p) for p in paths]
        self.policy = policy or FilePolicy()
        self._count = 0

    @classmethod
    def from_params(cls, params: Mapping[str, object], policy: FilePolicy) -> FileTarget:
        paths = params.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise InvalidArgument("target.files.paths", "must be a non-empty list of paths")
        return cls(paths, policy)

    def plan(self) -> Iterator[Unit | Skipped]:
        self._count = 0
        for path in self.paths:
            yield from self._visit(path, depth=0)

    def _visit(self, path: str, depth: int) -> Iterator[Unit | Skipped]:
        try:
            st = os.lstat(path)
            if depth == 0 and stat.S_ISLNK(st.st_mode):  # named explicitly: scan what it points to
                path = os.path.realpath(path, strict=True)
                st = os.lstat(path)
        except OSError as e:
            yield Skipped(path, 0, GapKind.UNREADABLE, e.strerror or str(e))
            return
        if stat.S_ISDIR(st.st_mode):
            yield from self._walk_dir(path, depth)
        elif stat.S_ISREG(st.st_mode):
            yield self._file(path, st) if st.st_size else self._sized_by_reading(path, st)
        elif depth == 0:
            yield Skipped(path, 0, GapKind.SKIPPED_POLICY, "not a regular file or directory")

    def _walk_dir(self, path: str, depth: int) -> Iterator[Unit | Skipped]:
        excluded = self.policy.excluded_dir(path)
        if excluded is not None:
            yield excluded
            return
        if depth >= self.policy.max_depth:
            yield Skipped(path, 0, GapKind.SKIPPED_LIMIT, f"deeper than {self.policy.max_depth}")
            return
        try:
            with os.scandir(path) as it:
                names = sorted(entry.name for entry in it)
        except OSError as e:
            yield Skipped(path, 0, GapKind.UNREADABLE, e.strerror or str(e))
            return
        for name in names:
            yield from self._visit(os.path.join(path, name), depth + 1)

    def _sized_by_reading(self, path: str, st: os.stat_result) -> Unit | Skipped:
        """A file whose size says 0: read to EOF (bounded), so a pseudo-file's bytes are scanned."""
        unit, limit = self._file(path, st), self.policy.max_file_size
        if not isinstance(unit, FileUnit):
            return unit  # excluded or over the file count: not read at all
        try:
            opened = open_host_file(path, "file")
        except SourceError as e:
            return Skipped(path, 0, GapKind.UNREADABLE, e.message.removeprefix(f"{path}: "))
        try:
            data = read_to_eof(opened.fd, limit)
        except OSError as e:
            return Skipped(path, 0, GapKind.UNREADABLE, f"read failed: {e.strerror or e}")
        finally:
            os.close(opened.fd)
        if data is None:
            return Skipped(path, limit, GapKind.SKIPPED_LIMIT, f"size 0 but more than max_file_size {limit} bytes")
        return PseudoFileUnit(path, data) if data else unit

    def _file(self, path: str, st: os.stat_result) -> Unit | Skipped:
        policy, size = self.policy, st.st_size
        skipped = policy.skip(path, path, size)
        if skipped is not None:
            return skipped
        self._count += 1
        if self._count > policy.max_files:
            return Skipped(path, size, GapKind.SKIPPED_LIMIT, f"more than {policy.max_files} files")
        return FileUnit(path, size)
