"""The content-addressed result cache: what a window or file matched, by content and ruleset.

One instance per appliance (``App``), shared by every scan, persistent across restarts, so VMs
cloned from one template and rescans of unchanged guests and disks only pay for what differs.

Keys. ``sha256("avscan-cache-v1", libyara version, hash name, content digest, ruleset digest,
scan context)``:

- content digest: XXH3-128 (``scanner.native``, about 9 GiB/s per core here) of the bytes the
  window reads, keyed with a random 64-bit seed made when the cache file is created and kept in
  it, so guest code cannot precompute colliding pages. For memory windows it is assembled from
  the digests of the 1 MiB blocks the window covers (``blockmap``: one read of the unit, no
  second pass); for files and other whole units it is the hash of all their bytes. XXH3 is not a
  MAC: the seed raises the bar, it is not a proof; whoever can read the cache file knows the
  seed, so the file is the appliance's (mode of ``state_dir``), and deleting it rotates the seed.
- ruleset digest: a new ruleset never reads old results.
- scan context: everything else that shapes the result, i.e. where the window's own part ends
  (ownership of matches), its length, the instance limits, and the unit's externals the ruleset
  declares (a file's name and path for signature-base). Not the address: identical memory at
  another address, or in another guest, hits.

Values: the findings of that content, each rule with its string instances at offsets relative
to the window's first byte (translated back to unit offsets and addresses on a hit). Only
complete results are stored: a window with any gap (timeout, unreadable, too many matches) is
scanned again next time. On a miss the content is hashed again after the scan, in the same
mapping; if it changed under the scan (a running guest), the result is not stored either.

Memory windows are cut at content-stable places (``windows.aligned_windows``): cells of
``engine.chunk_size`` aligned to unit offsets (guest physical addresses for RAM), zero blocks
skipped inside each cell, so a block that differs changes the key of its own cell (and of the
cell before it, which reads ``overlap`` bytes into it), never the cuts elsewhere: identical
memory at the same place in two guests hits, wherever the other blocks differ. The same cuts are
used without a cache, so findings never depend on whether the cache is on. Smaller cells share
more between guests booted separately (KASLR, page allocation) and cost more YARA calls:
``chunk_size = 2 MiB`` is the fleet setting measured in ``benchmarks/native_core.py``.

Identities (``scanner.targets.identity``): a rescan of something unchanged should not read it.
A unit with ``identity()`` (a host file whose stamp has settled) is looked up first by that
identity, which maps to the content digest it had when last read: a hit needs no read at all.
A target with ``identity()`` (a disk image whose backing files have all settled) gives back its
whole complete earlier result, counts, findings and details, without walking the filesystem
(``cache.reused`` in the verdict's details). Only the appliance's own stat data is used, never
guest-controlled metadata, and only complete results are stored, so a scan with any gap runs
again in full.

Storage: SQLite (WAL, ``synchronous=NORMAL``): atomic inserts and crash safety for free, an
index for least-recently-used eviction, one file. A lost last transaction after a power cut
only costs a rescan. Entries are JSON (never pickle: the file is data, not code). Size is
bounded by ``max_bytes``: past it the least recently used entries go until 90% remain. A file
that cannot be opened as a cache is moved aside and a new one started.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yara  # type: ignore[import-not-found,unused-ignore]

from scanner import native
from scanner.engine.blockmap import BlockMap, Segment, digest_from_map, digest_from_view, segments
from scanner.engine.cache_store import EntryStore, PostgresEntries, SqliteEntries
from scanner.engine.matcher import RuleHit, Ruleset, WindowResult, match_view, scan_window, used_externals
from scanner.engine.settings import EngineSettings
from scanner.engine.windows import Window
from scanner.errors import UnreadableError
from scanner.state.codec import coverage_from_dict, coverage_to_dict, finding_from_dict, finding_to_dict
from scanner.targets.base import Unit
from scanner.verdicts import MAX_MATCHED_DATA, Coverage, Finding, StringMatch

log = logging.getLogger(__name__)

MiB = 1024 * 1024
_ENTRY_OVERHEAD = 64  # bytes of SQLite bookkeeping per row, counted against max_bytes
TOUCH_BATCH = 512  # hits whose recency is written in one transaction


@dataclass(frozen=True)
class CacheSettings:
    """``[cache]`` in the config: where the cache lives, how big it may grow, whether it is on.

    ``path`` empty: ``<state_dir>/result-cache.sqlite3``. ``url`` (``postgresql://user@host/db``)
    instead: the fleet's shared cache in PostgreSQL (every appliance of the fleet names the same
    database; the password, if any, from ``PGPASSWORD`` or ``~/.pgpass``, never the file).
    """

    enabled: bool = True
    path: str = ""
    url: str = ""
    max_bytes: int = 256 * MiB

    def __post_init__(self) -> None:
        if self.max_bytes < 1 * MiB:
            raise ValueError("cache.max_bytes must be at least 1 MiB")
        if self.url and not self.url.startswith(("postgresql://", "postgres://")):
            raise ValueError("cache.url must be a postgresql:// URL")
        if self.url and self.path:
            raise ValueError("cache.url and cache.path: give one")


class ResultCache:
    """Findings by (content digest, ruleset digest, context); thread-safe, LRU-bounded, on disk.

    ``where``: a file path (SQLite, this appliance's own) or a ``postgresql://`` URL (the fleet's
    shared cache, ``[cache] url``): a clone of a golden image scanned on one host is a hit on
    every other.
    """

    def __init__(self, where: str | Path, max_bytes: int = 256 * MiB) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.shared = str(where).startswith(("postgresql://", "postgres://"))
        self.path = Path(where) if not self.shared else Path()
        self._store = self._open(str(where))
        self.seed = self._store.seed()
        _, self._bytes, self._tick = self._store.totals()
        self._touched: dict[bytes, int] = {}  # recency updates not yet written (one transaction per batch)
        self._unsynced = 0  # bytes put since the store's own total was last read (a shared store)

    def _open(self, where: str) -> EntryStore:
        if self.shared:
            return PostgresEntries(where)
        try:
            return SqliteEntries(self.path)
        except sqlite3.DatabaseError as e:
            aside = self.path.with_name(f"{self.path.name}.bad-{int(time.time())}")
            log.warning("result cache %s unusable (%s); moved to %s, starting empty", self.path, e, aside)
            os.replace(self.path, aside)
            return SqliteEntries(self.path)

    @property
    def size_bytes(self) -> int:
        return int(self._bytes)

    def __len__(self) -> int:
        with self._lock:
            return self._store.totals()[0]

    def _next_tick(self) -> int:
        """A recency stamp: microseconds of wall time, kept increasing here (appliances of a
        fleet share one LRU order, near enough)."""
        self._tick = max(self._tick + 1, time.time_ns() // 1000)
        return self._tick

    def get(self, key: bytes) -> list[Any] | None:
        """The stored hits for ``key`` (marked as just used), or None."""
        with self._lock:
            raw = self._store.get(key)
            if raw is None:
                return None
            self._touched[key] = self._next_tick()
            if len(self._touched) >= TOUCH_BATCH:
                self._flush_touches()
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, list) else None

    def put(self, key: bytes, hits: list[Any]) -> None:
        value = json.dumps(hits, separators=(",", ":")).encode()
        size = len(key) + len(value) + _ENTRY_OVERHEAD
        with self._lock:
            old = self._store.put(key, value, size, self._next_tick())
            self._bytes += size - old
            self._unsynced += size
            if self.shared and self._unsynced > self.max_bytes // 32:  # others write too: recount
                self._bytes, self._unsynced = self._store.totals()[1], 0
            if self._bytes > self.max_bytes:
                self._flush_touches()
                self._bytes = self._store.evict(int(self.max_bytes * 0.9))

    def flush(self) -> None:
        """Write pending recency updates (the engine calls it at the end of every scan)."""
        with self._lock:
            self._flush_touches()

    def _flush_touches(self) -> None:
        if not self._touched:
            return
        rows = [(tick, key) for key, tick in self._touched.items()]
        self._touched.clear()
        self._store.touch(rows)

    def close(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            self._flush_touches()
            self._store.close()


def cache_key(content: bytes, ruleset: Ruleset, context: Any) -> bytes:
    h = hashlib.sha256(b"avscan-cache-v1\0%s\0%d\0" % (yara.YARA_VERSION.encode(), MAX_MATCHED_DATA))
    h.update(native.HASH_NAME.encode() + b"\0" + content + b"\0")
    h.update(ruleset.digest.encode() + b"\0")
    h.update(json.dumps(context, sort_keys=True, separators=(",", ":")).encode())
    return h.digest()


def encode_hits(hits: list[RuleHit], base: int) -> list[Any]:
    """JSON-able hits with instance offsets relative to ``base`` (the window's first byte)."""
    return [
        [h.namespace, h.rule, list(h.tags), dict(h.meta), h.truncated,
         [[i.identifier, i.offset - base, i.length, i.data.hex()] for i in h.instances]]
        for h in hits
    ]  # fmt: skip


def decode_hits(value: list[Any], unit: Unit, base: int) -> list[RuleHit]:
    out = []
    for namespace, rule, tags, meta, truncated, instances in value:
        hit = RuleHit(namespace, rule, tuple(tags), meta, truncated=truncated)
        for identifier, rel, length, data in instances:
            offset = base + rel
            hit.instances.append(
                StringMatch(identifier, offset, unit.base + offset, length, bytes.fromhex(data), unit.physical(offset))
            )
        out.append(hit)
    return out


def host_namespace() -> bytes:
    """This host, for keys built from its own stat data: a file's (device, inode, times) stamp
    means something only on the host that took it, and a fleet shares one cache. The machine id
    and the host name together (cloned appliance VMs may share a machine id)."""
    try:
        machine = Path("/etc/machine-id").read_bytes().strip()
    except OSError:
        machine = b""
    return hashlib.sha256(machine + b"\0" + socket.gethostname().encode()).digest()


HOST = host_namespace()


def identity_key(identity: bytes) -> bytes:
    """Where the content digest last seen under a unit's identity is kept (same table, same LRU);
    in this host's namespace, so another appliance's stamps can never vouch for our files."""
    return hashlib.sha256(b"avscan-identity-v2\0" + native.HASH_NAME.encode() + b"\0" + HOST + identity).digest()


def remember(cache: ResultCache, unit: Unit, identity: bytes | None, digest: bytes) -> None:
    """Record that ``unit``'s content under ``identity`` hashes to ``digest``, if the unit still
    vouches for that identity after its bytes were read (an open that found the file changed
    withdraws it)."""
    if identity is not None and unit.identity() == identity:
        cache.put(identity_key(identity), [digest.hex()])


@dataclass(frozen=True)
class Planned:
    """A window the planner already looked up (a miss): its key and how to check its bytes."""

    key: bytes
    digest: bytes
    segments: list[Segment] | None  # None: the digest is hash128 of all the window's bytes
    identity: bytes | None = None  # the unit's identity when it was looked up (whole units only)


def _context(ruleset: Ruleset, unit: Unit, window: Window, max_instances: int, max_per_string: int) -> list[Any]:
    return [window.length, window.own_end - window.offset, max_instances, max_per_string,
            sorted(used_externals(ruleset, unit).items())]  # fmt: skip


def _hit(value: list[Any], unit: Unit, window: Window) -> WindowResult:
    return WindowResult(decode_hits(value, unit, window.offset), [], window.own_end - window.offset, cache_hit=True)


def lookup_planned(
    cache: ResultCache,
    ruleset: Ruleset,
    unit: Unit,
    window: Window,
    blocks: BlockMap,
    max_instances: int,
    max_per_string: int,
) -> WindowResult | Planned | None:
    """Look ``window`` up by the digests of the blocks it covers, without reading it: its cached
    result, or what its scan needs to store one (a miss), or None (no digest: hash its bytes)."""
    segs = segments(blocks, window)
    if segs is None:
        return None
    digest = digest_from_map(blocks, segs)
    key = cache_key(b"segments:" + digest, ruleset, _context(ruleset, unit, window, max_instances, max_per_string))
    value = cache.get(key)
    if value is not None:
        return _hit(value, unit, window)
    return Planned(key, digest, segs)


def _whole(unit: Unit, window: Window) -> bool:
    return not unit.chunkable and window.offset == 0 and window.length == unit.size


def lookup_known(
    cache: ResultCache, ruleset: Ruleset, unit: Unit, window: Window, max_instances: int, max_per_string: int
) -> WindowResult | None:
    """The cached result of a whole unit found through its identity alone (no read), or None."""
    identity = unit.identity() if _whole(unit, window) else None
    if identity is None:
        return None
    known = cache.get(identity_key(identity))
    if not known or not isinstance(known[0], str):
        return None
    try:
        digest = bytes.fromhex(known[0])
    except ValueError:
        return None
    key = cache_key(b"bytes:" + digest, ruleset, _context(ruleset, unit, window, max_instances, max_per_string))
    value = cache.get(key)
    return None if value is None else _hit(value, unit, window)


def lookup_small(
    cache: ResultCache, ruleset: Ruleset, unit: Unit, window: Window, max_instances: int, max_per_string: int
) -> WindowResult | Planned | None:
    """Look a small window (a small file) up by hashing it on the calling thread: cheaper than a
    round trip through the pool when it hits. None when it cannot be read (the scan reports it)."""
    identity = unit.identity() if _whole(unit, window) else None
    try:
        with unit.window(window.offset, window.length) as view:
            digest = native.hash128(view, cache.seed, populate=True)
    except UnreadableError:
        return None
    key = cache_key(b"bytes:" + digest, ruleset, _context(ruleset, unit, window, max_instances, max_per_string))
    value = cache.get(key)
    if value is not None:
        remember(cache, unit, identity, digest)
        return _hit(value, unit, window)
    return Planned(key, digest, None, identity)


def _planned_digest(planned: Planned, view: memoryview, window: Window, seed: int) -> bytes | None:
    if planned.segments is None:
        return native.hash128(view, seed)
    return digest_from_view(view, window.offset, planned.segments, seed)


def scan_window_cached(
    cache: ResultCache,
    ruleset: Ruleset,
    unit: Unit,
    window: Window,
    deadline: float,
    max_instances: int,
    max_per_string: int,
    planned: Planned | None = None,
) -> WindowResult:
    """:func:`~scanner.engine.matcher.scan_window` through the cache (see the module contract).

    Without ``planned`` the window's bytes are hashed here and looked up first; with it (a miss
    found by the planner) the window is scanned, and the result stored if its bytes still have
    the planned digest after the scan.
    """
    context = _context(ruleset, unit, window, max_instances, max_per_string)
    identity = planned.identity if planned is not None else unit.identity() if _whole(unit, window) else None
    try:
        with unit.window(window.offset, window.length) as view:
            if planned is None:
                digest = native.hash128(view, cache.seed, populate=True)
                key = cache_key(b"bytes:" + digest, ruleset, context)
                value = cache.get(key)
                if value is not None:
                    remember(cache, unit, identity, digest)
                    return _hit(value, unit, window)
            result = match_view(ruleset, unit, window, view, deadline, max_instances, max_per_string)
            if planned is None:
                stable = native.hash128(view, cache.seed) == digest
            else:
                key, digest = planned.key, planned.digest
                stable = _planned_digest(planned, view, window, cache.seed) == planned.digest
    except UnreadableError:
        result = scan_window(ruleset, unit, window, deadline, max_instances, max_per_string)
        result.cache_hit = False
        return result
    if not result.gaps and stable:
        cache.put(key, encode_hits(result.hits, window.offset))
        remember(cache, unit, identity, digest)
    result.cache_hit = False
    return result


# -- whole targets --------------------------------------------------------------------------------


def target_key(identity: bytes, ruleset: Ruleset, settings: EngineSettings) -> bytes:
    """The key of a whole target's result: its identity (``Target.identity``), the ruleset, and
    every engine setting that shapes findings (not threads or timeouts: only complete results
    are stored)."""
    s = settings
    context = ["target", s.chunk_size, s.overlap, s.skip_zero_blocks, s.max_matches_per_string,
               s.max_strings_per_finding, s.max_findings_per_unit]  # fmt: skip
    return cache_key(b"target:" + HOST + identity, ruleset, context)


def stored_target(coverage: Coverage, findings: list[Finding], details: Mapping[str, str]) -> list[Any]:
    """A complete result as stored: coverage, findings, the target's details."""
    return [coverage_to_dict(coverage), [finding_to_dict(f) for f in findings], dict(details)]


def loaded_target(value: list[Any]) -> tuple[Coverage, list[Finding], dict[str, str]]:
    """The inverse of :func:`stored_target`; raises KeyError/TypeError/ValueError if damaged."""
    coverage, findings, details = value
    return (
        coverage_from_dict(coverage),
        [finding_from_dict(f) for f in findings],
        {str(k): str(v) for k, v in details.items()},
    )
