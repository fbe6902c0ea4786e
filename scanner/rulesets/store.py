"""The signature store on disk: push, validate, activate, roll back, list, load.

Layout under ``root``::

    sets/<hex>/sources/<relative path>   the rule source as pushed
    sets/<hex>/compiled.yarc             compiled by the child-process compiler
    sets/<hex>/manifest.json             see scanner.rulesets.manifest
    active.json                          the active pointer (scanner.rulesets.pointer)
    version.json                         the last version number handed out
    tmp/                                 staging; emptied on open

Contract:
- A ruleset is content-addressed (``sets/<hex>`` from its digest) and written whole into
  ``tmp/``, every file fsynced, then renamed into ``sets/`` and the directory fsynced: after a
  crash it is either fully there or absent. Pushing the same content again returns the stored
  ruleset and its version (idempotent). Versions only grow, also across restarts.
- A push that does not compile stores nothing and raises RulesetError with every diagnostic.
- Activation replaces ``active.json`` atomically. A crash at any point leaves the old or the new
  pointer; leftover temp files are removed on open. A pointer that is corrupt, or names a
  ruleset that is missing or whose compiled file fails its sha256, makes ``active()`` raise
  FailedPrecondition; nothing else is activated silently (``activate`` may replace it).
- ``load`` verifies the compiled file against the manifest before yara loads it. Scans keep
  the LoadedRuleset they started with; activation only swaps the pointer.
- Mutations hold a thread lock and an ``flock`` on ``root/.lock``.
"""

from __future__ import annotations

import builtins
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yara  # type: ignore[import-not-found,unused-ignore]

from scanner.errors import Diagnostic, FailedPrecondition, InvalidArgument, NotFound, RulesetError
from scanner.rulesets import pointer as ptr
from scanner.rulesets.compiler import (
    EXTERNALS,
    CompileLimits,
    Probe,
    check_limits,
    raise_on_errors,
    read_rule_tree,
    run_compiler,
)
from scanner.rulesets.durable import fsync_dir, fsync_file, replace_atomically, write_synced
from scanner.rulesets.manifest import MANIFEST_NAME, FileEntry, Manifest, read_manifest
from scanner.rulesets.model import (
    DIGEST_PREFIX,
    LoadedRuleset,
    RulesetFile,
    RulesetInfo,
    check_rule_path,
    digest_hex,
    ruleset_digest,
)
from scanner.rulesets.signing import BundleSignature, TrustedKeys, check_not_older

Audit = Callable[[str, str, str, str], None]
COMPILED_NAME = "compiled.yarc"
MAX_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 4096


@dataclasses.dataclass(frozen=True)
class PushOptions:
    """How a push is vouched for: ``signature`` (required when keys are trusted),
    ``allow_rollback`` (accept a bundle version below the active one's), ``force_slow_rules``
    (store rules slower than the probe budget, as warnings). ``trusted_source``: the appliance's
    own default ruleset, installed with it, not pushed by anyone (no signature checks)."""

    signature: BundleSignature | None = None
    allow_rollback: bool = False
    force_slow_rules: bool = False
    trusted_source: bool = False


class RulesetStore:
    """Rulesets under ``root``; ``audit(actor, action, subject, detail)`` hears every change."""

    def __init__(
        self,
        root: Path,
        audit: Audit | None = None,
        limits: CompileLimits | None = None,
        cache_size: int = 4,
        clock: Callable[[], float] = time.time,
        trust: TrustedKeys | None = None,
    ) -> None:
        self.root = root
        self.trust = trust or TrustedKeys()
        self._audit = audit or _no_audit
        self._limits = limits or CompileLimits()
        self._clock = clock
        self._cache: OrderedDict[str, LoadedRuleset] = OrderedDict()
        self._cache_size = cache_size
        self._manifests: dict[str, Manifest] = {}
        self._broken: dict[str, str] = {}
        self._thread_lock = threading.RLock()
        self._lock_depth = 0
        for d in (root, root / "sets", root / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        with self._locked():
            _remove_abandoned_staging(root / "tmp")
            ptr.clean_pointer_temps(root)
            self._refresh()

    @property
    def limits(self) -> CompileLimits:
        """The bounds every compilation here runs under (this appliance's)."""
        return self._limits

    # -- compile and store ---------------------------------------------------------------

    def validate(self, files: Iterable[RulesetFile], actor: str = "") -> builtins.list[Diagnostic]:
        """Compile ``files`` and return every error and warning (rules too slow on the
        reference buffer are errors, as at push); store nothing (``actor``: for the fleet's
        store, which records validations)."""
        del actor
        return builtins.list(run_compiler(files, self._limits, probe=Probe()).diagnostics)

    def push(
        self,
        files: Iterable[RulesetFile],
        name: str,
        description: str,
        actor: str,
        push: PushOptions | None = None,
    ) -> RulesetInfo:
        """Compile and store ``files`` as a new version (or return the identical stored one).

        Checked first: the signature (``scanner.rulesets.signing``) and the bundle version
        against the active ruleset's. Rules slower than the probe budget on the reference buffer
        are refused (RulesetError naming them) unless ``push.force_slow_rules``.
        """
        push = push or PushOptions()
        check_push_text(name, description)
        ordered = check_limits(files, self._limits)
        digest = ruleset_digest(ordered)
        if not push.trusted_source:
            self.trust.verify(digest, push.signature)
            check_not_older(push.signature, self._active_signature(), push.allow_rollback)
        existing = self._existing(digest)
        if existing is not None:
            self._audit(actor, "ruleset.push", digest, f"unchanged: version {existing.version}")
            return existing
        staging = Path(tempfile.mkdtemp(prefix=f"push-{os.getpid()}-", dir=self.root / "tmp"))
        try:
            result = run_compiler(ordered, self._limits, staging / COMPILED_NAME, Probe(push.force_slow_rules))
            raise_on_errors(result)
            if result.rule_count == 0:
                raise RulesetError("ruleset has no rules", builtins.list(result.diagnostics))
            entries = _write_sources(staging / "sources", ordered)
            compiled_sha = _sync_and_hash(staging / COMPILED_NAME)
            draft = Manifest(
                digest,
                0,
                name,
                description,
                actor,
                self._clock(),
                entries,
                compiled_sha,
                result.rule_count,
                result.warnings,
                push.signature,
            )
            info = self._commit(staging, draft)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._audit(
            actor,
            "ruleset.push",
            digest,
            f"version {info.version}: {info.rule_count} rules, {len(info.warnings)} warnings, name {name!r}",
        )
        return info

    def _commit(self, staging: Path, draft: Manifest) -> RulesetInfo:
        """Number the ruleset and rename it into ``sets/`` (or return the one a racer stored)."""
        hexd = digest_hex(draft.digest)
        with self._locked():
            self._refresh()
            if hexd in self._manifests:
                return self._info(self._manifests[hexd])
            version = self._next_version()
            manifest = dataclasses.replace(draft, version=version)
            write_synced(staging / MANIFEST_NAME, manifest.to_bytes())
            fsync_dir(staging)
            staging.rename(self.root / "sets" / hexd)
            fsync_dir(self.root / "sets")
            self._manifests[hexd] = manifest
            return self._info(manifest)

    def ensure_default(self, signatures: Path, actor: str = "system") -> RulesetInfo | None:
        """On first start (nothing active), push and activate the rules in ``signatures``.

        Returns the activated ruleset, or None when one was active already. A broken active
        pointer raises (FailedPrecondition) rather than being replaced by the default.
        """
        with self._locked():
            if self.active() is not None:
                return None
            files = read_rule_tree(signatures, self._limits)
            installed = PushOptions(trusted_source=True)  # shipped with the appliance, not pushed
            info = self.push(files, "default", f"default ruleset from {signatures}", actor, installed)
            return self.activate(info.digest, actor, trusted_source=True)

    # -- activation ----------------------------------------------------------------------

    def activate(
        self, digest_or_version: str | int, actor: str, allow_rollback: bool = False, trusted_source: bool = False
    ) -> RulesetInfo:
        """Make a stored ruleset the active one (after verifying it loads); atomic.

        With trusted keys configured, the ruleset must carry a signature that verifies, and a
        lower bundle version than the active one's needs ``allow_rollback``."""
        with self._locked():
            manifest = self._resolve(digest_or_version)
            if not trusted_source:
                self.trust.verify(manifest.digest, manifest.signature)
                check_not_older(manifest.signature, self._active_signature(), allow_rollback)
            self.load(manifest.digest)
            now = ptr.Activation(manifest.digest, manifest.version, actor, self._clock())
            try:
                current = ptr.read_pointer(self.root)
                note = ""
            except FailedPrecondition as e:
                current, note = None, f"; replaced a broken pointer ({e.message})"
            if current is not None and current.current.digest == manifest.digest:
                return self._info(manifest)
            new = current.activate(now) if current else ptr.ActivePointer(now)
            ptr.write_pointer(self.root, new)
        was = f"version {current.current.version}" if current else "none"
        self._audit(
            actor,
            "ruleset.activate",
            manifest.digest,
            f"version {manifest.version} (was {was}){note}",
        )
        return self._info(manifest)

    def rollback(self, actor: str) -> RulesetInfo:
        """Go back to the previously active ruleset; FailedPrecondition if there is none."""
        with self._locked():
            current = ptr.read_pointer(self.root)
            new = current.rolled_back(actor, self._clock()) if current else None
            if current is None or new is None:
                raise FailedPrecondition("rollback: no previously active ruleset")
            manifest = self._resolve(new.current.digest)
            self.load(manifest.digest)
            ptr.write_pointer(self.root, new)
        self._audit(
            actor,
            "ruleset.rollback",
            manifest.digest,
            f"version {manifest.version} (was version {current.current.version})",
        )
        return self._info(manifest)

    def _active_signature(self) -> BundleSignature | None:
        """The signature of the active ruleset (None: none active, unsigned, or unreadable)."""
        try:
            current = ptr.read_pointer(self.root)
            return self._resolve(current.current.digest).signature if current else None
        except (NotFound, FailedPrecondition):
            return None

    def active(self) -> LoadedRuleset | None:
        """The active ruleset, verified and loaded; None if none was ever activated.

        FailedPrecondition if the pointer is corrupt or names a missing or corrupted ruleset.
        """
        current = ptr.read_pointer(self.root)
        if current is None:
            return None
        try:
            return self.load(current.current.digest)
        except (NotFound, FailedPrecondition) as e:
            raise FailedPrecondition(
                f"active ruleset {current.current.digest} (version {current.current.version}) "
                f"cannot be loaded: {e.message}"
            ) from e

    # -- reading -------------------------------------------------------------------------

    def list(self) -> builtins.list[RulesetInfo]:
        """Every stored ruleset, oldest version first."""
        with self._locked():
            self._refresh()
            manifests = sorted(self._manifests.values(), key=lambda m: m.version)
        return [self._info(m) for m in manifests]

    def get(self, digest_or_version: str | int) -> RulesetInfo:
        """One stored ruleset by digest (``sha256:<hex>`` or hex) or version; NotFound if none."""
        return self._info(self._resolve(digest_or_version))

    def load(self, digest: str) -> LoadedRuleset:
        """The compiled rules of a stored ruleset, checked against the manifest's sha256."""
        hexd = digest_hex(digest)
        with self._thread_lock:
            cached = self._cache.get(hexd)
            if cached is not None:
                self._cache.move_to_end(hexd)
                return cached
        manifest = self._resolve(DIGEST_PREFIX + hexd)
        path = self.root / "sets" / hexd / COMPILED_NAME
        try:
            data = path.read_bytes()
        except OSError as e:
            raise FailedPrecondition(f"{path}: compiled rules unreadable: {e}") from e
        actual = hashlib.sha256(data).hexdigest()
        if actual != manifest.compiled_sha256:
            raise FailedPrecondition(
                f"{path}: compiled rules fail verification (sha256 {actual}, manifest says {manifest.compiled_sha256})"
            )
        try:
            rules = yara.load(file=io.BytesIO(data))
        except yara.Error as e:
            raise FailedPrecondition(f"{path}: yara cannot load compiled rules: {e}") from e
        loaded = LoadedRuleset(
            manifest.digest,
            manifest.version,
            manifest.name,
            rules,
            manifest.rule_count,
            dict(EXTERNALS),
            manifest.warnings,
        )
        with self._thread_lock:
            self._cache[hexd] = loaded
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return loaded

    def sources(self, digest: str) -> builtins.list[RulesetFile]:
        """The source files of a stored ruleset, each checked against its manifest sha256."""
        manifest = self._resolve(digest)
        base = self.root / "sets" / digest_hex(manifest.digest) / "sources"
        files = []
        for entry in manifest.files:
            data = (base / check_rule_path(entry.path)).read_bytes()
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                raise FailedPrecondition(f"{base / entry.path}: source fails sha256 verification")
            files.append(RulesetFile(entry.path, data))
        return files

    # -- internals -----------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The thread lock, and an ``flock`` taken by the outermost holder only (re-entrant)."""
        with self._thread_lock:
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            with open(self.root / ".lock", "a+b") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
                self._lock_depth = 1
                try:
                    yield
                finally:
                    self._lock_depth = 0

    def _refresh(self) -> None:
        """Index ruleset directories not seen yet (another process may have pushed)."""
        for d in (self.root / "sets").iterdir():
            if d.name not in self._manifests and d.name not in self._broken:
                try:
                    self._manifests[d.name] = read_manifest(d / MANIFEST_NAME)
                except FailedPrecondition as e:
                    self._broken[d.name] = e.message  # reported when asked for, not at open

    def _existing(self, digest: str) -> RulesetInfo | None:
        with self._locked():
            self._refresh()
            manifest = self._manifests.get(digest_hex(digest))
        return self._info(manifest) if manifest else None

    def _next_version(self) -> int:
        """One more than any version handed out; recorded before use so it is never reused."""
        path = self.root / "version.json"
        last = max((m.version for m in self._manifests.values()), default=0)
        if path.exists():
            last = max(last, int(json.loads(path.read_bytes())["last_version"]))
        replace_atomically(path, json.dumps({"last_version": last + 1}).encode())
        return last + 1

    def _resolve(self, digest_or_version: str | int) -> Manifest:
        """The manifest of a ruleset by version or digest (looking again on disk if unknown)."""
        with self._thread_lock:
            found = self._lookup(digest_or_version)
            if found is None:
                self._refresh()
                found = self._lookup(digest_or_version)
        if found is None:
            raise NotFound(f"ruleset {digest_or_version} not found")
        return found

    def _lookup(self, digest_or_version: str | int) -> Manifest | None:
        if isinstance(digest_or_version, int) or digest_or_version.isdigit():
            version = int(digest_or_version)
            return next((m for m in self._manifests.values() if m.version == version), None)
        hexd = digest_hex(digest_or_version)
        if hexd in self._broken:
            raise FailedPrecondition(self._broken[hexd])
        return self._manifests.get(hexd)

    def _info(self, manifest: Manifest) -> RulesetInfo:
        try:
            current = ptr.read_pointer(self.root)
        except FailedPrecondition:
            current = None  # listings still work; active() reports the broken pointer
        active = current is not None and current.current.digest == manifest.digest
        return manifest.info(active=active)


def _no_audit(actor: str, action: str, subject: str, detail: str) -> None:
    del actor, action, subject, detail


def check_push_text(name: str, description: str) -> None:
    """A pushed ruleset's name and description within their limits (InvalidArgument otherwise)."""
    _check_text("name", name, MAX_NAME_CHARS, required=True)
    _check_text("description", description, MAX_DESCRIPTION_CHARS, required=False)


def _check_text(field: str, value: str, limit: int, required: bool) -> None:
    if not isinstance(value, str) or (required and not value.strip()):
        why = "must be a non-empty string" if required else "must be a string"
        raise InvalidArgument(field, why)
    if len(value) > limit or "\x00" in value:
        raise InvalidArgument(field, f"over {limit} characters or contains NUL")


def _remove_abandoned_staging(tmp: Path) -> None:
    """Delete staging dirs of pushes whose process is gone (``push-<pid>-...``; a crash)."""
    for d in tmp.iterdir():
        pid = d.name.split("-")[1] if d.name.count("-") >= 2 else ""
        if pid.isdigit() and _alive(int(pid)):
            continue  # another process is pushing right now
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
        else:
            d.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_sources(base: Path, files: builtins.list[RulesetFile]) -> tuple[FileEntry, ...]:
    """Write every source file fsynced, then fsync every directory made, deepest first."""
    dirs = {base}
    entries = []
    for f in files:
        target = base / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        dirs.update(p for p in target.parents if p.is_relative_to(base))
        write_synced(target, f.data)
        entries.append(FileEntry(f.path, hashlib.sha256(f.data).hexdigest(), len(f.data)))
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(d)
    fsync_dir(base.parent)
    return tuple(entries)


def _sync_and_hash(path: Path) -> str:
    fsync_file(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()
