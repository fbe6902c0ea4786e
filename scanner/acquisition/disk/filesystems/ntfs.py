"""NTFS through libfsntfs (``pyfsntfs``, C): every data stream of every file record.

Contract of the nodes this module makes (see :class:`~scanner.acquisition.disk.filesystems.Node`):

- **Streams.** A file (or directory) record with named ``$DATA`` attributes (alternate data
  streams) is listed once per stream: the default stream under the file's name, each named
  stream as a ``file`` child ``<file name>:<stream name>`` next to it (the root directory's own
  streams, Windows' ``C:\\:stream``, are its children ``:<stream>``). ``key`` is the MFT segment
  number for the default stream and for directories, ``(segment, stream name)`` for a named
  stream; :meth:`NtfsRoot.allocated` uses the same keys.
- **Reparse points by tag.** Symbolic links and junctions/mount points
  (``IO_REPARSE_TAG_SYMLINK``, ``IO_REPARSE_TAG_MOUNT_POINT``) are ``symlink``: listed, never
  followed. WOF-compressed files (``IO_REPARSE_TAG_WOF``, Windows' "CompactOS" compression) are
  read decompressed from their ``WofCompressedData`` stream by libfsntfs (that stream itself is
  not listed again); a chunk libfsntfs cannot decompress is a read error, so a gap naming the
  file. Cloud placeholders (``IO_REPARSE_TAG_CLOUD_*``) and every other tag are ordinary files:
  the data present on this disk is scanned (a dehydrated placeholder holds none). Data
  Deduplication files (``IO_REPARSE_TAG_DEDUP``) keep their data in the volume's chunk store,
  which is not read: ``damaged`` (a gap naming why). EFS-encrypted files hold only ciphertext:
  ``damaged`` too.
- **Initialized size.** Bytes past a stream's valid data size read as zeros, not as the stale
  clusters behind them (libfsntfs does this; tests check it against ntfs-3g).
- **Names.** As the directory index holds them; an unpaired UTF-16 surrogate (legal in NTFS, not
  in UTF-8) is written ``\\uD800``. A record libfsntfs cannot load (a name it cannot convert in an
  attribute, a BAAD record) is ``damaged``: a gap, never a silent omission.
- **Allocation.** :meth:`NtfsRoot.allocated` sweeps the ``$MFT`` once and yields every data stream
  of every in-use user record as ``<mft N>`` / ``<mft N:stream>``, so a file no directory leads to
  (a damaged index, a junction over a directory that still has entries) is still scanned.
- **Not listed.** The reserved metadata records (MFT segments 0-15: ``$MFT``, ``$LogFile``,
  ``$Extend``...) and everything under ``$Extend`` (``$UsnJrnl``, ``$ObjId``, ``$Quota``,
  ``$Reparse``: records flagged as system/view-index files) are filesystem structures, not guest
  files. A directory entry whose record is unusable or not in use is ``damaged``.
"""

from __future__ import annotations

import io
import re
import struct
import threading
from collections.abc import Hashable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

from scanner.acquisition.disk.errors import DiskFormatError, unavailable
from scanner.acquisition.disk.filesystems import Node

FIRST_USER_RECORD = 16
ROOT_RECORD = 5
EXTEND_RECORD = 11
MAX_EXTEND_RECORDS = 10_000
SEGMENT_MASK = (1 << 48) - 1

# MFT record header flags (FILE_RECORD_SEGMENT_HEADER.Flags)
IN_USE, DIRECTORY, IN_EXTEND, VIEW_INDEX = 0x01, 0x02, 0x04, 0x08
KNOWN_RECORD_FLAGS = 0x0F
# $STANDARD_INFORMATION / $FILE_NAME file attribute flags
ENCRYPTED = 0x4000
# reparse tags (winnt.h)
TAG_MOUNT_POINT = 0xA0000003
TAG_SYMLINK = 0xA000000C
TAG_DEDUP = 0x80000013
TAG_WOF = 0x80000017
REPARSE_POINT_ATTRIBUTE = 0xC0
WOF_STREAM = "WofCompressedData"
MFT_CHUNK_RECORDS = 1024  # records read per step when sweeping the MFT


def detect(head: bytes) -> bool:
    return head[3:11] == b"NTFS    "


def open_fs(stream: BinaryIO) -> NtfsRoot:
    try:
        import pyfsntfs  # type: ignore[import-not-found,unused-ignore]
    except ImportError as e:
        raise unavailable("libfsntfs-python", e) from e
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    volume = pyfsntfs.volume()
    try:
        volume.open_file_object(stream)
    except Exception as e:  # libfsntfs: a one-line backtrace; the cause is what the gap should say
        raise DiskFormatError("ntfs", f"volume does not open: {_reason(e)}") from e
    return NtfsRoot(Volume(volume, size))


class Volume:
    """An open libfsntfs volume, its size, and the lock every call into it takes: nodes are read
    from the engine's worker threads, and libfsntfs reads through one shared Python stream.
    ``parsed`` keeps what the walk learnt of each record (kind, size, streams), so the MFT sweep
    after it parses only the records no directory led to."""

    def __init__(self, fs: Any, size: int) -> None:
        self.fs = fs
        self.size = size
        self.lock = threading.RLock()
        self.parsed: dict[int, list[tuple[str, int, str]]] = {}

    def entry(self, segment: int) -> Any:
        with self.lock:
            return self.fs.get_file_entry(segment)


class NtfsNode(Node):
    """One stream of one MFT record (or a directory). Holds only the numbers needed to find the
    record again, so a walk of a million files keeps no parsed records alive."""

    def __init__(
        self, volume: Volume, segment: int, name: str, kind: str, size: int, stream: str = "", problem: str = ""
    ) -> None:
        self.volume = volume
        self.segment = segment
        self.stream = stream
        self.name = name
        self.key: Hashable = (segment, stream) if stream else segment
        self.kind = kind
        self.size = size
        self.problem = problem

    def children(self) -> Iterator[Node]:
        try:
            with self.volume.lock:
                entry = self.volume.entry(self.segment)
                count = entry.number_of_sub_file_entries
        except Exception as e:  # libfsntfs: a one-line backtrace; say the cause
            raise OSError(f"directory (MFT record {self.segment}) not listable: {_reason(e)}") from e
        seen: set[int] = set()
        for index in range(count):
            with self.volume.lock:
                try:
                    child = entry.get_sub_file_entry(index)
                    segment = _listed_segment(child)
                except Exception as e:  # libfsntfs on a hostile record: this entry is a gap, the rest goes on
                    problem = f"directory entry not readable: {_reason(e)}"
                    nodes = [self._damaged(f"<entry {index}>", ("entry", self.segment, index), problem)]
                else:
                    if segment < FIRST_USER_RECORD or segment in seen:
                        continue  # metadata files; a name listed twice (hard links in one dir) once
                    seen.add(segment)
                    nodes = list(nodes_of(self.volume, child, segment, _listed_name(child, segment)))
                    if all(node.kind != "damaged" for node in nodes):
                        self.volume.parsed[segment] = [(node.kind, node.size, node.stream) for node in nodes]
            yield from nodes

    def open(self) -> BinaryIO:
        try:
            with self.volume.lock:
                entry = self.volume.entry(self.segment)
                source = entry.get_alternate_data_stream_by_name(self.stream) if self.stream else entry
                wof = not self.stream and _reparse_tag(entry) == TAG_WOF
        except Exception as e:  # libfsntfs: a one-line backtrace; say the cause
            raise OSError(f"MFT record {self.segment} not readable: {_reason(e)}") from e
        if source is None:
            raise OSError(f"MFT record {self.segment} has no stream {self.stream!r} any more")
        what = f"MFT record {self.segment}" + (f" stream {self.stream!r}" if self.stream else "")
        if wof:
            what = f"WOF-compressed data of {what}"
        return cast(BinaryIO, StreamReader(self.volume.lock, source, self.size, what))

    def times(self) -> Mapping[str, datetime | None]:
        with self.volume.lock:
            entry = self.volume.entry(self.segment)
            return {
                "mtime": _utc(entry.modification_time),
                "ctime": _utc(entry.entry_modification_time),
                "atime": _utc(entry.access_time),
                "crtime": _utc(entry.creation_time),
            }

    def _damaged(self, name: str, key: Hashable, problem: str) -> NtfsNode:
        """A gap: ``key`` is the record's segment when known, else a tuple naming where it was."""
        node = NtfsNode(self.volume, -1, name, "damaged", 0, problem=problem)
        node.key = key
        return node


class NtfsRoot(NtfsNode):
    """The root directory, which also answers what the MFT itself says is allocated."""

    def __init__(self, volume: Volume) -> None:
        super().__init__(volume, ROOT_RECORD, "", "dir", 0)
        self._extend: set[int] = set()

    def children(self) -> Iterator[Node]:
        """The root's own named streams first (``:<stream>``, Windows' ``C:\\:stream``: a known
        hiding place), then its entries."""
        yield from self._own_streams(lambda stream: f":{printable(stream)}")
        yield from super().children()

    def _own_streams(self, name: Any) -> Iterator[NtfsNode]:
        try:
            with self.volume.lock:
                streams = _named_streams(self.volume.entry(ROOT_RECORD))
        except Exception as e:  # libfsntfs: a one-line backtrace; say the cause
            raise OSError(f"root directory (MFT record {ROOT_RECORD}) not readable: {_reason(e)}") from e
        for stream, size in streams:
            yield NtfsNode(self.volume, ROOT_RECORD, name(stream), "file", size, stream=stream)

    def allocated(self) -> Iterator[Node] | None:
        """Every data stream of every in-use base record (segment >= 16, not under ``$Extend``,
        and the root directory's named streams):
        a file's default and named streams, a directory's or a link's named streams only, as
        file nodes named ``<mft N>`` / ``<mft N:stream>``,
        with the keys a directory walk reaching them gives. Read from the ``$MFT`` records' own
        headers, once, in order; a record in use that libfsntfs cannot parse is ``damaged``."""
        return self._allocated()

    def _allocated(self) -> Iterator[Node]:
        fs = self.volume.fs
        self._extend = self._extend_records()
        try:
            yield from self._own_streams(lambda stream: _mft_name(ROOT_RECORD, stream))
        except OSError as e:
            yield self._damaged(_mft_name(ROOT_RECORD, ""), ROOT_RECORD, str(e))
        try:
            with self.volume.lock:
                mft = fs.get_file_entry(0)
                record_size = int(fs.mft_entry_size)
                # a hostile (sparse) $MFT may claim more records than the volume can hold: bounded by both
                total = min(int(fs.number_of_file_entries), min(int(mft.size), self.volume.size) // record_size)
        except Exception as e:  # no $MFT to sweep: the whole sweep is one gap
            yield self._damaged("<mft>", ("mft",), f"$MFT not readable: {_reason(e)}")
            return
        for first in range(FIRST_USER_RECORD, total, MFT_CHUNK_RECORDS):
            count = min(MFT_CHUNK_RECORDS, total - first)
            try:
                with self.volume.lock:
                    raw = mft.read_buffer_at_offset(count * record_size, first * record_size)
            except Exception as e:  # an unreadable stretch of $MFT: every record in it is a gap
                last = first + count - 1
                problem = f"$MFT records {first}-{last} not readable: {_reason(e)}"
                yield self._damaged(f"<mft {first}-{last}>", ("mft", first, last), problem)
                continue
            for i in range(len(raw) // record_size):
                yield from self._record(first + i, raw[i * record_size : (i + 1) * record_size])

    def _extend_records(self) -> set[int]:
        """Records under ``$Extend`` (``$UsnJrnl``, ``$RmMetadata``...), found by listing it:
        not every writer flags them as such in their record headers. Bounded; best effort (what
        cannot be listed here is swept as an ordinary record, never dropped)."""
        found: set[int] = set()
        stack = [EXTEND_RECORD]
        while stack and len(found) < MAX_EXTEND_RECORDS:
            try:
                with self.volume.lock:
                    entry = self.volume.entry(stack.pop())
                    children = [entry.get_sub_file_entry(i) for i in range(entry.number_of_sub_file_entries)]
                    for child in children:
                        segment = _listed_segment(child)
                        if segment not in found and segment >= FIRST_USER_RECORD:
                            found.add(segment)
                            if child.has_directory_entries_index():
                                stack.append(segment)
            except Exception:  # noqa: S112 - a damaged $Extend: its files are swept like any other
                continue
        return found

    def _parse(self, segment: int, name: str) -> list[NtfsNode]:
        with self.volume.lock:
            try:
                entry = self.volume.entry(segment)
            except Exception as e:  # libfsntfs on a hostile record
                return [self._damaged(name, segment, f"MFT record {segment} not readable: {_reason(e)}")]
            return list(nodes_of(self.volume, entry, segment, name, lambda stream: _mft_name(segment, stream)))

    def _record(self, segment: int, header: bytes) -> Iterator[Node]:
        name = f"<mft {segment}>"
        if header[:4] not in (b"FILE", b"BAAD"):
            return  # never used (zeros) or not a record at all: nothing allocated here
        flags, base = struct.unpack_from("<H", header, 0x16)[0], struct.unpack_from("<Q", header, 0x20)[0]
        if header[:4] == b"BAAD" or flags & ~KNOWN_RECORD_FLAGS:
            problem = "failed its multi-sector check (BAAD)" if header[:4] == b"BAAD" else f"has flags {flags:#x}"
            yield self._damaged(name, segment, f"MFT record {segment} {problem}: damaged, contents unknown")
            return
        if not flags & IN_USE or flags & (IN_EXTEND | VIEW_INDEX) or base & SEGMENT_MASK or segment in self._extend:
            return  # free, a $Extend metadata file, or an extension of another record
        known = self.volume.parsed.get(segment)
        if known is not None:  # the walk parsed this record already
            nodes = [NtfsNode(self.volume, segment, _mft_name(segment, s), k, n, stream=s) for k, n, s in known]
        else:
            nodes = self._parse(segment, name)
        for node in nodes:
            if node.kind not in ("dir", "symlink"):  # a directory's or a link's named streams only
                yield node


def _mft_name(segment: int, stream: str) -> str:
    return f"<mft {segment}:{printable(stream)}>" if stream else f"<mft {segment}>"


def nodes_of(volume: Volume, entry: Any, segment: int, name: str, named: Any = None) -> Iterator[NtfsNode]:
    """The nodes of one record: its default stream (or the directory), then each named stream.

    ``named(stream)`` names a named stream's node (default ``<name>:<stream>``)."""
    try:
        kind, problem = _kind(entry, segment)
        size = int(entry.size) if kind == "file" else 0
        streams = [] if kind == "damaged" else _named_streams(entry)
    except Exception as e:  # libfsntfs on a hostile record
        yield NtfsNode(volume, segment, name, "damaged", 0, problem=f"MFT record {segment}: {_reason(e)}")
        return
    yield NtfsNode(volume, segment, name, kind, size, problem=problem)
    for stream, stream_size in streams:
        label = named(stream) if named else f"{name}:{printable(stream)}"
        yield NtfsNode(volume, segment, label, "file", stream_size, stream=stream)


def _listed_segment(child: Any) -> int:
    """The record a directory entry names: from the index entry itself, not from the record it
    leads to (libfsntfs gives a record it cannot load, e.g. one marked BAAD, file reference 0)."""
    reference = child.get_i30_file_reference() if child.has_i30_entry() else child.file_reference
    return int(reference) & SEGMENT_MASK


def _listed_name(child: Any, segment: int) -> str:
    """The entry's name; ``<mft N>`` when it has none or libfsntfs cannot decode it."""
    try:
        return printable(str(child.name or f"<mft {segment}>"))
    except Exception:  # a name libuna cannot convert: the file is still scanned, under its record
        return f"<mft {segment}>"


def printable(name: str) -> str:
    """``name`` with each unpaired UTF-16 surrogate (legal in NTFS names, not encodable as UTF-8)
    written as ``\\uD800``: unambiguous, as NTFS names cannot hold a backslash."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04X}", name)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _kind(entry: Any, segment: int) -> tuple[str, str]:
    """``(kind, problem)`` of a record: a reason to distrust it first, then what it is."""
    problem = _unusable(entry, segment)
    if problem:
        return "damaged", f"MFT record {segment} {problem}"
    tag = _reparse_tag(entry)
    if tag in (TAG_SYMLINK, TAG_MOUNT_POINT):
        return "symlink", ""
    if entry.has_directory_entries_index():
        return "dir", ""
    if tag == TAG_DEDUP:
        return "damaged", f"MFT record {segment}: Data Deduplication file, its data is in the chunk store (not read)"
    if (entry.file_attribute_flags or 0) & ENCRYPTED:
        return "damaged", f"MFT record {segment}: EFS-encrypted, contents are ciphertext (not scanned)"
    return "file", ""


def _unusable(entry: Any, segment: int) -> str:
    if int(entry.file_reference) & SEGMENT_MASK != segment:
        return "does not load (damaged record: bad signature or attributes)"
    if not entry.is_allocated():
        return "is listed in a directory but not in use"
    return ""


def _named_streams(entry: Any) -> list[tuple[str, int]]:
    streams = []
    wof = _reparse_tag(entry) == TAG_WOF
    for i in range(entry.number_of_alternate_data_streams):
        stream = entry.get_alternate_data_stream(i)
        if stream.name and not (wof and stream.name == WOF_STREAM):
            streams.append((str(stream.name), int(stream.size)))
    return streams


def _reparse_tag(entry: Any) -> int | None:
    for i in range(entry.number_of_attributes):
        attribute = entry.get_attribute(i)
        if attribute.attribute_type == REPARSE_POINT_ATTRIBUTE:
            return int(attribute.tag)
    return None


def _utc(value: object) -> datetime | None:
    """libfsntfs gives naive datetimes in UTC (NTFS stores UTC): made explicit, as the other
    filesystems' are."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _reason(e: BaseException) -> str:
    """A libyal error in a few words: its backtrace is one line of ``function: message.`` parts,
    the binding's own first, then the innermost cause; the cause (and the part naming a
    decompression, if any) is what a reader needs."""
    parts = [p.split(": ", 1)[-1].strip().rstrip(".") for p in re.split(r"\.\s+(?=\w+: )", str(e)) if p.strip()]
    if not parts:
        return type(e).__name__
    cause = parts[1] if len(parts) > 1 else parts[0]
    method = next((p for p in parts if "unable to decompress" in p and "compressed data" in p), "")
    return f"{method}: {cause}" if method and method != cause else cause


class StreamReader(io.RawIOBase):
    """A read-only, seekable view of a pyfsntfs file entry or data stream of ``size`` bytes."""

    def __init__(self, lock: threading.RLock, source: Any, size: int, what: str) -> None:
        super().__init__()
        self._lock = lock
        self._source = source
        self._size = size
        self._what = what
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left if negative), in one call into libfsntfs."""
        left = max(0, self._size - self._pos)
        length = left if size is None or size < 0 else min(size, left)
        if length == 0:
            return b""
        try:
            with self._lock:
                data = bytes(self._source.read_buffer_at_offset(length, self._pos))
        except Exception as e:  # libfsntfs: IOError with a backtrace, or worse on hostile data
            raise OSError(f"{self._what} not readable at offset {self._pos}: {_reason(e)}") from e
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
