"""The signature store of a fleet: rulesets and the active pointer in the shared PostgreSQL.

The interface of :class:`scanner.rulesets.store.RulesetStore` (push, validate, activate, roll
back, list, get, load, active, sources, ensure_default), with the fleet as its scope.

Contract:
- PostgreSQL holds every pushed ruleset (its sources as pushed, content-addressed by digest, with
  name, pusher, signature and warnings), every validation, and the **fleet's active pointer**
  (the same document as ``active.json``: current plus the rollback stack) with a generation that
  grows on every change and one ``ruleset_activations`` row per change (the history). Versions are
  the fleet's (a sequence): they only grow, whichever appliance pushed.
- ``push`` compiles on this appliance first (the local store, with its limits and the probe): a
  ruleset that does not compile here is not stored anywhere. The same content again returns the
  stored ruleset.
- ``activate``/``rollback`` move the fleet's pointer in one transaction (row lock) and NOTIFY
  :data:`CHANNEL`; activating first checks that the ruleset loads here. Then this appliance follows
  at once (:meth:`sync`); the others follow on the notification or their next poll
  (:mod:`scanner.rulesets.follower`).
- :meth:`sync` makes this appliance run the pointer's digest: sources from PostgreSQL (each file
  and the whole set checked against their digests), the signature checked against *this*
  appliance's trusted keys, compiled by the local store under *its* limits, activated locally.
  Success or failure goes to ``ruleset_status`` (digest running, digest wanted, error), the audit
  log and the service log. On failure the appliance keeps the ruleset it ran; a failed generation
  is not retried until the pointer moves again or the appliance restarts (a lost connection to
  PostgreSQL is not a failure of the ruleset: it raises :class:`Unavailable` and the next turn
  tries again).
- ``active``/``load`` are what this appliance runs (so a verdict records the digest actually
  used), numbered with the fleet's versions; ``list``/``get`` are the fleet's.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.errors import Diagnostic, FailedPrecondition, NotFound, ScannerError, Unavailable
from scanner.rulesets import pointer as ptr
from scanner.rulesets.compiler import check_limits, read_rule_tree
from scanner.rulesets.model import DIGEST_PREFIX, LoadedRuleset, RulesetFile, RulesetInfo, digest_hex, ruleset_digest
from scanner.rulesets.signing import BundleSignature, check_not_older
from scanner.rulesets.store import PushOptions, RulesetStore, check_push_text
from scanner.state.postgres import PostgresDatabase

log = logging.getLogger(__name__)

CHANNEL = "avscan_rulesets"
ROW = (
    "digest, version, name, description, pushed_by, pushed_at, rule_count, warnings, signature, force_slow_rules,"
    " (SELECT COUNT(*) FROM ruleset_files f WHERE f.digest = r.digest),"
    " (SELECT COALESCE(SUM(length(data)), 0) FROM ruleset_files f WHERE f.digest = r.digest)"
)


@dataclass(frozen=True)
class StoredRuleset:
    """A ruleset row: what the fleet knows of one pushed ruleset."""

    info: RulesetInfo
    force_slow_rules: bool


@dataclass(frozen=True)
class Followed:
    """What :meth:`FleetRulesetStore.sync` did: the pointer's ``generation`` and ``wanted``
    digest, the ``running`` digest after it, and the ``error`` that kept the old one (or "")."""

    generation: int
    wanted: str
    running: str
    error: str


class FleetRulesetStore:
    """Rulesets of the fleet in ``db``; ``local`` compiles and keeps them on this appliance."""

    def __init__(self, db: PostgresDatabase, local: RulesetStore, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.local = local
        self.trust = local.trust
        self._clock = clock
        self._versions: dict[str, int] = {}
        self._sync_lock = threading.Lock()
        self._reported: tuple[int, str, str] | None = None  # (generation, running, error) last recorded
        self._failed: tuple[int, str] | None = None  # (generation, digest) that did not compile here

    # -- compile and store ---------------------------------------------------------------

    def validate(self, files: Iterable[RulesetFile], actor: str = "") -> builtins.list[Diagnostic]:
        """Compile here and return the diagnostics; the result is recorded for the fleet."""
        files = builtins.list(files)
        diagnostics = self.local.validate(files)
        ok = not any(d.severity == "error" for d in diagnostics)
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO ruleset_validations (digest, appliance, actor, ok, diagnostics)"
                " VALUES (%s, %s, %s, %s, %s)",
                (ruleset_digest(files), self.db.appliance, actor or self.db.appliance, ok,
                 json.dumps([dataclasses.asdict(d) for d in diagnostics])),
            )  # fmt: skip
        return diagnostics

    def push(
        self,
        files: Iterable[RulesetFile],
        name: str,
        description: str,
        actor: str,
        push: PushOptions | None = None,
    ) -> RulesetInfo:
        """Check the signature against the fleet's active ruleset, compile here, store for the fleet."""
        push = push or PushOptions()
        check_push_text(name, description)  # before the signature is checked or anything stored
        ordered = check_limits(files, self.local.limits)
        digest = ruleset_digest(ordered)
        if not push.trusted_source:
            self.trust.verify(digest, push.signature)
            check_not_older(push.signature, self._active_signature(), push.allow_rollback)
        existing = self._find(digest)
        if existing is not None:
            self.db.audit(actor, "ruleset.push", digest, f"unchanged: version {existing.info.version}")
            return existing.info
        here = self.local.push(ordered, name, description, actor, dataclasses.replace(push, trusted_source=True))
        with self.db.connection() as conn, conn.transaction():
            inserted = conn.execute(
                "INSERT INTO rulesets (digest, version, name, description, pushed_by, pushed_at, pushed_on, rule_count,"
                " warnings, signature, force_slow_rules) VALUES (%s, nextval('ruleset_versions'), %s, %s, %s, %s, %s,"
                " %s, %s, %s, %s) ON CONFLICT (digest) DO NOTHING RETURNING version",
                (digest, name, description, actor, self._clock(), self.db.appliance, here.rule_count,
                 json.dumps([dataclasses.asdict(w) for w in here.warnings]),
                 json.dumps(push.signature.to_json()) if push.signature else None, push.force_slow_rules),
            ).fetchone()  # fmt: skip
            if inserted is not None:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO ruleset_files (digest, path, sha256, data) VALUES (%s, %s, %s, %s)",
                        [(digest, f.path, hashlib.sha256(f.data).hexdigest(), f.data) for f in ordered],
                    )
        info = self.get(digest)
        self.db.audit(
            actor,
            "ruleset.push",
            digest,
            f"version {info.version}: {info.rule_count} rules, {len(info.warnings)} warnings, name {name!r},"
            f" on {self.db.appliance}",
        )
        return info

    def ensure_default(self, signatures: Path, actor: str = "system") -> RulesetInfo | None:
        """The first appliance of a fleet installs the default ruleset fleet-wide; every later
        start follows the fleet's pointer instead. Returns what was installed, or None."""
        if self._pointer()[0] is None:
            files = read_rule_tree(signatures, self.local.limits)
            installed = PushOptions(trusted_source=True)  # shipped with the appliance, not pushed
            info = self.push(files, "default", f"default ruleset from {signatures}", actor, installed)
            if self._move(lambda current: None if current else self._activation(info, actor), "activate", actor):
                self.sync()
                return info
        self.sync()
        return None

    # -- activation ----------------------------------------------------------------------

    def activate(
        self, digest_or_version: str | int, actor: str, allow_rollback: bool = False, trusted_source: bool = False
    ) -> RulesetInfo:
        """Make a stored ruleset the fleet's active one (after checking it loads here)."""
        stored = self._resolve(digest_or_version)
        info = stored.info
        if not trusted_source:
            self.trust.verify(info.digest, info.signature)
            check_not_older(info.signature, self._active_signature(), allow_rollback)
        self._materialize(stored)
        self.local.load(info.digest)

        def change(current: ptr.ActivePointer | None) -> ptr.ActivePointer | None:
            if current is not None and current.current.digest == info.digest:
                return None
            new = self._activation(info, actor)
            return current.activate(new.current) if current is not None else new

        self._move(change, "activate", actor)
        self.sync()
        return self.get(info.digest)

    def rollback(self, actor: str) -> RulesetInfo:
        """Go back to the fleet's previously active ruleset; FailedPrecondition if there is none."""
        back: list[str] = []

        def change(current: ptr.ActivePointer | None) -> ptr.ActivePointer | None:
            new = current.rolled_back(actor, self._clock()) if current else None
            if new is None:
                raise FailedPrecondition("rollback: no previously active ruleset")
            back.append(new.current.digest)
            return new

        self._move(change, "rollback", actor)
        self.sync()
        return self.get(back[-1])

    # -- following -----------------------------------------------------------------------

    def sync(self) -> Followed | None:
        """Run the fleet's active ruleset here, or keep the current one and say why; None when
        the fleet has none yet."""
        with self._sync_lock:
            pointer, generation = self._pointer()
            if pointer is None:
                return None
            wanted = pointer.current
            running, error = self._running(), ""
            if running != wanted.digest and self._failed != (generation, wanted.digest):
                try:
                    self._follow(wanted)
                    running = wanted.digest
                    self._failed = None
                except Unavailable:
                    raise  # PostgreSQL away: nothing learned about the ruleset; the next turn retries
                except ScannerError as e:
                    self._failed, error = (generation, wanted.digest), e.message
                    self._report_failure(wanted, running, error)
            elif running != wanted.digest and self._reported is not None:
                error = self._reported[2]  # the failure of this generation, already reported
            followed = Followed(generation, wanted.digest, running, error)
            if self._reported != (generation, running, error):
                self._record(followed)
            return followed

    def _follow(self, wanted: ptr.Activation) -> None:
        stored = self._resolve(wanted.digest)
        self.trust.verify(stored.info.digest, stored.info.signature)  # this appliance's keys
        self._materialize(stored)
        self.local.activate(wanted.digest, f"fleet ({wanted.activated_by})", trusted_source=True)
        log.info("ruleset %s (version %d) active here, as in the fleet", wanted.digest, wanted.version)
        self.db.audit(self.db.appliance, "ruleset.follow", wanted.digest, f"version {wanted.version} active here")

    def _report_failure(self, wanted: ptr.Activation, running: str, error: str) -> None:
        kept = running or "none"
        log.error("fleet ruleset %s (version %d) cannot be activated here; keeping %s: %s",
                  wanted.digest, wanted.version, kept, error)  # fmt: skip
        self.db.audit(self.db.appliance, "ruleset.follow_failed", wanted.digest, f"kept {kept}: {error}")

    def _record(self, followed: Followed) -> None:
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO ruleset_status (appliance, host, digest, wanted_digest, generation, error, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, now()) ON CONFLICT (appliance) DO UPDATE SET host = EXCLUDED.host,"
                " digest = EXCLUDED.digest, wanted_digest = EXCLUDED.wanted_digest, generation = EXCLUDED.generation,"
                " error = EXCLUDED.error, updated_at = now()",
                (self.db.appliance, self.db.host, followed.running, followed.wanted, followed.generation,
                 followed.error),
            )  # fmt: skip
        self._reported = (followed.generation, followed.running, followed.error)

    def _running(self) -> str:
        try:
            loaded = self.local.active()
        except FailedPrecondition:
            return ""
        return loaded.digest if loaded is not None else ""

    # -- reading -------------------------------------------------------------------------

    def active(self) -> LoadedRuleset | None:
        """The ruleset this appliance runs (normally the fleet's active one; see ``sync``)."""
        loaded = self.local.active()
        return self._numbered(loaded) if loaded is not None else None

    def load(self, digest: str) -> LoadedRuleset:
        """The compiled rules of a fleet ruleset, compiled here first if this appliance lacks them."""
        try:
            return self._numbered(self.local.load(digest))
        except NotFound:
            self._materialize(self._resolve(digest))
            return self._numbered(self.local.load(digest))

    def list(self) -> builtins.list[RulesetInfo]:
        """Every ruleset of the fleet, oldest version first."""
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT {ROW} FROM rulesets r ORDER BY version").fetchall()
        active = self._active_digest()
        return [self._stored(r, active).info for r in rows]

    def get(self, digest_or_version: str | int) -> RulesetInfo:
        return self._resolve(digest_or_version).info

    def sources(self, digest: str) -> builtins.list[RulesetFile]:
        """The source files as pushed, each checked against its sha256, the set against its digest."""
        hexd = digest_hex(digest)
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT path, sha256, data FROM ruleset_files WHERE digest = %s ORDER BY path", (DIGEST_PREFIX + hexd,)
            ).fetchall()
        files = []
        for path, sha, data in rows:
            if hashlib.sha256(bytes(data)).hexdigest() != sha:
                raise FailedPrecondition(f"ruleset {digest}: {path} fails sha256 verification in the fleet's state")
            files.append(RulesetFile(str(path), bytes(data)))
        if not files or ruleset_digest(files) != DIGEST_PREFIX + hexd:
            raise FailedPrecondition(f"ruleset {digest}: the sources in the fleet's state do not match its digest")
        return files

    # -- internals -----------------------------------------------------------------------

    def _materialize(self, stored: StoredRuleset) -> None:
        """Compile the fleet's ruleset into the local store unless it is there already."""
        info = stored.info
        try:
            self.local.get(info.digest)
            return
        except NotFound:
            pass
        vouched = PushOptions(signature=info.signature, force_slow_rules=True, trusted_source=True)
        self.local.push(self.sources(info.digest), info.name, info.description, info.pushed_by, vouched)

    def _numbered(self, loaded: LoadedRuleset) -> LoadedRuleset:
        """``loaded`` with the fleet's version number (the local store numbers its own copies)."""
        version = self._versions.get(loaded.digest)
        if version is None:
            version = self._resolve(loaded.digest).info.version
            self._versions[loaded.digest] = version
        return dataclasses.replace(loaded, version=version)

    def _pointer(self, conn: Any = None, lock: bool = False) -> tuple[ptr.ActivePointer | None, int]:
        sql = "SELECT doc, generation FROM ruleset_pointer WHERE id = 1" + (" FOR UPDATE" if lock else "")
        if conn is None:
            with self.db.connection() as own:
                row = own.execute(sql).fetchone()
        else:
            row = conn.execute(sql).fetchone()
        if row is None:
            return None, 0
        return ptr.pointer_from_bytes(row[0], f"the fleet's ruleset pointer at {self.db.where}"), int(row[1])

    def _move(
        self, change: Callable[[ptr.ActivePointer | None], ptr.ActivePointer | None], action: str, actor: str
    ) -> bool:
        """Apply ``change`` to the fleet's pointer under its lock (None: leave it); record the
        history row and the audit record, NOTIFY, all in one transaction."""
        with self.db.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('avscan_ruleset_pointer'))")
            current, generation = self._pointer(conn, lock=True)
            new = change(current)
            if new is None:
                return False
            doc = ptr.pointer_to_bytes(new).decode()
            conn.execute(
                "INSERT INTO ruleset_pointer (id, generation, doc) VALUES (1, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET generation = EXCLUDED.generation, doc = EXCLUDED.doc",
                (generation + 1, doc),
            )
            conn.execute(
                "INSERT INTO ruleset_activations (generation, action, digest, version, actor, appliance)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (generation + 1, action, new.current.digest, new.current.version, actor, self.db.appliance),
            )
            was = f"version {current.current.version}" if current is not None else "none"
            conn.execute(
                "INSERT INTO audit (at, actor, action, subject, detail) VALUES (%s, %s, %s, %s, %s)",
                (time.time(), actor, f"ruleset.{action}", new.current.digest,
                 f"version {new.current.version} (was {was}) for the fleet, on {self.db.appliance}"),
            )  # fmt: skip
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(generation + 1)))
        return True

    def _activation(self, info: RulesetInfo, actor: str) -> ptr.ActivePointer:
        return ptr.ActivePointer(ptr.Activation(info.digest, info.version, actor, self._clock()))

    def _active_digest(self) -> str:
        pointer = self._pointer()[0]
        return pointer.current.digest if pointer is not None else ""

    def _active_signature(self) -> BundleSignature | None:
        try:
            digest = self._active_digest()
            return self._resolve(digest).info.signature if digest else None
        except (NotFound, FailedPrecondition):
            return None

    def _find(self, digest: str) -> StoredRuleset | None:
        with self.db.connection() as conn:
            row = conn.execute(f"SELECT {ROW} FROM rulesets r WHERE digest = %s", (digest,)).fetchone()
        return self._stored(row, self._active_digest()) if row is not None else None

    def _resolve(self, digest_or_version: str | int) -> StoredRuleset:
        """A fleet ruleset by version or digest; NotFound if the fleet has none such."""
        if isinstance(digest_or_version, int) or digest_or_version.isdigit():
            with self.db.connection() as conn:
                version = int(digest_or_version)
                row = conn.execute(f"SELECT {ROW} FROM rulesets r WHERE version = %s", (version,)).fetchone()
            found = self._stored(row, self._active_digest()) if row is not None else None
        else:
            found = self._find(DIGEST_PREFIX + digest_hex(digest_or_version))
        if found is None:
            raise NotFound(f"ruleset {digest_or_version} not found in the fleet")
        return found

    @staticmethod
    def _stored(row: Any, active: str) -> StoredRuleset:
        (digest, version, name, description, pushed_by, pushed_at, rule_count, warnings, signature, force,
         file_count, size) = row  # fmt: skip
        info = RulesetInfo(
            digest=str(digest),
            version=int(version),
            name=str(name),
            description=str(description),
            pushed_by=str(pushed_by),
            pushed_at=float(pushed_at),
            rule_count=int(rule_count),
            file_count=int(file_count),
            size_bytes=int(size),
            warnings=tuple(Diagnostic(**w) for w in json.loads(warnings)),
            active=str(digest) == active,
            signature=BundleSignature.from_json(json.loads(signature)) if signature else None,
        )
        return StoredRuleset(info, bool(force))
