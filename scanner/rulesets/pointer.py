"""The active-ruleset pointer: one small JSON file replaced atomically on every change.

``active.json`` holds the active digest and version, who activated it and when, and
``previous``: the stack (most recent first) that ``rollback`` pops. A missing file means no
ruleset is active; an unreadable one is an error, never "nothing active".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scanner.errors import FailedPrecondition
from scanner.rulesets.durable import remove_temp_files, replace_atomically

POINTER_NAME = "active.json"
MAX_HISTORY = 64
_FORMAT = 1


@dataclass(frozen=True)
class Activation:
    """One activation: which ruleset, by whom, when (seconds since the epoch)."""

    digest: str
    version: int
    activated_by: str
    activated_at: float


@dataclass(frozen=True)
class ActivePointer:
    current: Activation
    previous: tuple[Activation, ...] = ()

    def activate(self, new: Activation) -> ActivePointer:
        """The pointer after activating ``new``: the current one goes on the rollback stack."""
        return ActivePointer(new, ((self.current, *self.previous))[:MAX_HISTORY])

    def rolled_back(self, actor: str, now: float) -> ActivePointer | None:
        """The pointer after a rollback, or None when there is nothing to go back to."""
        if not self.previous:
            return None
        back = self.previous[0]
        return ActivePointer(Activation(back.digest, back.version, actor, now), self.previous[1:])


def read_pointer(root: Path) -> ActivePointer | None:
    """The pointer in ``root``; None if there is none. FailedPrecondition if it is unreadable."""
    path = root / POINTER_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise FailedPrecondition(f"{path}: active ruleset pointer unreadable: {e}") from e
    return pointer_from_bytes(raw, str(path))


def pointer_from_bytes(raw: bytes | str, where: str) -> ActivePointer:
    """Parse a pointer document; FailedPrecondition naming ``where`` if it is corrupt."""
    try:
        doc = json.loads(raw)
        if doc.get("format") != _FORMAT:
            raise ValueError(f"unknown format {doc.get('format')!r}")
        return ActivePointer(_activation(doc["current"]), tuple(_activation(a) for a in doc["previous"]))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise FailedPrecondition(
            f"{where}: active ruleset pointer is corrupt ({e}); activate a ruleset to replace it"
        ) from e


def pointer_to_bytes(pointer: ActivePointer) -> bytes:
    """The pointer document (what ``active.json`` holds, and the fleet's pointer row)."""
    doc = {
        "format": _FORMAT,
        "current": asdict(pointer.current),
        "previous": [asdict(a) for a in pointer.previous],
    }
    return json.dumps(doc, indent=1).encode()


def write_pointer(root: Path, pointer: ActivePointer) -> None:
    """Replace the pointer atomically (temp file, fsync, rename, fsync the directory)."""
    replace_atomically(root / POINTER_NAME, pointer_to_bytes(pointer))


def clean_pointer_temps(root: Path) -> list[Path]:
    """Delete temp files left by a write that a crash interrupted (the pointer is unchanged)."""
    return remove_temp_files(root, POINTER_NAME)


def _activation(doc: Any) -> Activation:
    return Activation(
        digest=str(doc["digest"]),
        version=int(doc["version"]),
        activated_by=str(doc["activated_by"]),
        activated_at=float(doc["activated_at"]),
    )
