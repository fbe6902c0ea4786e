"""What a ruleset is: its source files, its digest, and the compiled form scans use.

The digest of a ruleset is ``"sha256:<hex>"`` over a canonical encoding of its files, sorted by
path (as UTF-8 bytes)::

    b"scanner-ruleset-v1\\n"
    for each file:  u64be(len(path_utf8)) || path_utf8 || u64be(len(data)) || data

Only the content counts: name, description, who pushed it and when do not change the digest, so
pushing the same files twice is the same ruleset.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from scanner.errors import Diagnostic, InvalidArgument
from scanner.rulesets.signing import BundleSignature

DIGEST_PREFIX = "sha256:"
RULE_EXTENSIONS = (".yar", ".yara")
MAX_PATH_CHARS = 1024
MAX_COMPONENT_CHARS = 255
_DIGEST_MAGIC = b"scanner-ruleset-v1\n"
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
# Control characters and backslashes never belong in a ruleset path (NUL included).
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


class Rules(Protocol):
    """The part of ``yara.Rules`` the scanner uses (yara-python ships no type stubs)."""

    def match(self, *args: Any, **kwargs: Any) -> list[Any]: ...

    def save(self, *args: Any, **kwargs: Any) -> None: ...

    def __iter__(self) -> Iterator[Any]: ...


def check_rule_path(path: str) -> str:
    """Return ``path`` if it is a safe relative POSIX path of a rule file, else raise.

    Rejected: empty, absolute, ``.`` or ``..`` or empty components, backslashes, NUL and other
    control characters, a component over 255 or a path over 1024 characters, and any extension
    other than ``.yar``/``.yara``.
    """
    if not isinstance(path, str) or not path:
        raise InvalidArgument("path", "a rule file path must be a non-empty string")
    if len(path) > MAX_PATH_CHARS:
        raise InvalidArgument("path", f"{path[:64]!r}...: longer than {MAX_PATH_CHARS} characters")
    if _FORBIDDEN_CHARS.search(path):
        raise InvalidArgument("path", f"{path!r}: control characters or backslashes")
    if path.startswith("/"):
        raise InvalidArgument("path", f"{path!r}: absolute paths are not allowed")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise InvalidArgument("path", f"{path!r}: empty, '.' or '..' component")
        if len(part) > MAX_COMPONENT_CHARS:
            raise InvalidArgument("path", f"{path!r}: a component is over {MAX_COMPONENT_CHARS}")
    if not path.lower().endswith(RULE_EXTENSIONS):
        raise InvalidArgument("path", f"{path!r}: only .yar and .yara files are accepted")
    return path


@dataclass(frozen=True)
class RulesetFile:
    """One YARA source file of a ruleset; ``path`` is relative POSIX (``linux/miners.yar``)."""

    path: str
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_rule_path(self.path)
        if not isinstance(self.data, bytes):
            raise InvalidArgument("data", f"{self.path}: rule source must be bytes")


def check_file_set(files: Iterable[RulesetFile]) -> list[RulesetFile]:
    """Return the files sorted by path; reject an empty set, duplicates and file/dir clashes."""
    ordered = sorted(files, key=lambda f: f.path.encode())
    if not ordered:
        raise InvalidArgument("files", "a ruleset needs at least one rule file")
    paths = {f.path for f in ordered}
    if len(paths) != len(ordered):
        counts = Counter(f.path for f in ordered)
        dupes = sorted(p for p, n in counts.items() if n > 1)
        raise InvalidArgument("files", f"duplicate paths: {', '.join(dupes[:5])}")
    for f in ordered:
        parts = f.path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in paths:
                raise InvalidArgument("files", f"{parent!r} is both a file and a directory")
    return ordered


def ruleset_digest(files: Iterable[RulesetFile]) -> str:
    """The content digest ``sha256:<hex>`` of ``files`` (encoding in the module docstring)."""
    h = hashlib.sha256(_DIGEST_MAGIC)
    for f in sorted(files, key=lambda f: f.path.encode()):
        path = f.path.encode()
        h.update(struct.pack(">Q", len(path)))
        h.update(path)
        h.update(struct.pack(">Q", len(f.data)))
        h.update(f.data)
    return DIGEST_PREFIX + h.hexdigest()


def digest_hex(digest: str) -> str:
    """The 64 hex digits of ``sha256:<hex>`` (or of bare hex); InvalidArgument otherwise."""
    hexpart = digest.removeprefix(DIGEST_PREFIX)
    if not _HEX_DIGEST.match(hexpart):
        raise InvalidArgument("digest", f"{digest!r}: expected 'sha256:' and 64 hex digits")
    return hexpart


@dataclass(frozen=True)
class LoadedRuleset:
    """Compiled rules ready to scan with. Scans keep the object they started with.

    ``version`` is 0 for an ad-hoc ruleset (``scan --rules PATH``) that is not in the store.
    ``externals`` are the variables every rule may use; pass them (with real values) to
    ``rules.match(externals=...)``.
    """

    digest: str
    version: int
    name: str
    rules: Rules = field(repr=False, compare=False)
    rule_count: int
    externals: Mapping[str, str]
    warnings: tuple[Diagnostic, ...] = ()


@dataclass(frozen=True)
class RulesetInfo:
    """One stored ruleset as listings show it; ``pushed_at`` is seconds since the epoch."""

    digest: str
    version: int
    name: str
    description: str
    pushed_by: str
    pushed_at: float
    rule_count: int
    file_count: int
    size_bytes: int
    warnings: tuple[Diagnostic, ...]
    active: bool
    signature: BundleSignature | None = None
