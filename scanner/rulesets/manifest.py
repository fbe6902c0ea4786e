"""``manifest.json`` of a stored ruleset: what it is, who pushed it, and the hashes to verify.

The manifest lives inside the ruleset's directory and appears with it in one rename, so a
ruleset directory without a readable manifest is not a ruleset.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scanner.errors import Diagnostic, FailedPrecondition
from scanner.rulesets.model import RulesetInfo
from scanner.rulesets.signing import BundleSignature

MANIFEST_NAME = "manifest.json"
_FORMAT = 1


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    digest: str
    version: int
    name: str
    description: str
    pushed_by: str
    pushed_at: float
    files: tuple[FileEntry, ...]
    compiled_sha256: str
    rule_count: int
    warnings: tuple[Diagnostic, ...]
    signature: BundleSignature | None = None  # as pushed (verified then), or None: unsigned

    def info(self, active: bool) -> RulesetInfo:
        return RulesetInfo(
            digest=self.digest,
            version=self.version,
            name=self.name,
            description=self.description,
            pushed_by=self.pushed_by,
            pushed_at=self.pushed_at,
            rule_count=self.rule_count,
            file_count=len(self.files),
            size_bytes=sum(f.size for f in self.files),
            warnings=self.warnings,
            active=active,
            signature=self.signature,
        )

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {"format": _FORMAT, **asdict(self)}
        doc["signature"] = self.signature.to_json() if self.signature else None
        return json.dumps(doc, indent=1, sort_keys=True).encode()


def read_manifest(path: Path) -> Manifest:
    """Parse ``path``; FailedPrecondition (naming the file) if it is missing or malformed."""
    try:
        doc = json.loads(path.read_bytes())
        if doc.get("format") != _FORMAT:
            raise ValueError(f"unknown format {doc.get('format')!r}")
        return Manifest(
            digest=str(doc["digest"]),
            version=int(doc["version"]),
            name=str(doc["name"]),
            description=str(doc["description"]),
            pushed_by=str(doc["pushed_by"]),
            pushed_at=float(doc["pushed_at"]),
            files=tuple(FileEntry(str(f["path"]), str(f["sha256"]), int(f["size"])) for f in doc["files"]),
            compiled_sha256=str(doc["compiled_sha256"]),
            rule_count=int(doc["rule_count"]),
            warnings=tuple(Diagnostic(**w) for w in doc["warnings"]),
            signature=BundleSignature.from_json(doc["signature"]) if doc.get("signature") else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise FailedPrecondition(f"{path}: ruleset manifest unreadable: {e}") from e
