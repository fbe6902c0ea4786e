"""Checks a document against the ECS 8.11 field reference (elastic/ecs v8.11.0 ecs_flat.yml).

``ecs_fields_8.11.tsv`` beside this file is that reference reduced to name, type and array-ness,
``ecs_categories_8.11.tsv`` the event categories with the event types ECS expects for each
(both made from the upstream YAML; Apache-2.0, see ECS-LICENSE.txt). Every leaf outside
``avscan.*`` must be a field of the reference, with a value of its type; fields ECS normalizes to
arrays must be arrays; every category must be ECS's and every type one it expects.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path
from typing import Any

REFERENCE = Path(__file__).with_name("ecs_fields_8.11.tsv")
CATEGORIES = Path(__file__).with_name("ecs_categories_8.11.tsv")
NUMERIC = {"long", "integer", "short", "byte", "unsigned_long", "float", "double", "scaled_float", "half_float"}
TEXTUAL = {"keyword", "wildcard", "match_only_text", "text", "constant_keyword", "ip", "version"}


@cache
def fields() -> dict[str, tuple[str, bool]]:
    out = {}
    for line in REFERENCE.read_text().splitlines():
        if line.startswith("#"):
            continue
        name, kind, array = line.split("\t")
        out[name] = (kind, array == "array")
    return out


@cache
def categories() -> dict[str, set[str]]:
    """event.category -> the event.type values ECS expects with it."""
    out = {}
    for line in CATEGORIES.read_text().splitlines():
        if not line.startswith("#"):
            name, types = line.split("\t")
            out[name] = set(types.split(","))
    return out


def problems(doc: dict[str, Any]) -> list[str]:
    """Every way ``doc`` breaks the reference (empty when it is valid ECS)."""
    found: list[str] = []
    if doc.get("ecs", {}).get("version") != "8.11.0":
        found.append("ecs.version missing or not 8.11.0")
    for required in ("@timestamp", "message", "event.kind", "event.id", "observer.vendor", "host.name"):
        if _get(doc, required) is None:
            found.append(f"{required}: missing")
    _walk(doc, "", found)
    event = doc.get("event", {})
    for category in event.get("category", []):
        expected = categories().get(category)
        if expected is None:
            found.append(f"event.category: {category!r} is not an ECS category")
        elif not set(event.get("type", [])) <= expected:
            found.append(
                f"event.type {event.get('type')} is not expected with category {category} ({sorted(expected)})"
            )
    return found


def _walk(node: dict[str, Any], prefix: str, found: list[str]) -> None:
    ref = fields()
    for key, value in node.items():
        name = f"{prefix}{key}"
        if name == "avscan" or name.startswith("avscan."):
            continue
        if name in ref:
            _check(name, value, *ref[name], found)
        elif isinstance(value, dict):
            _walk(value, name + ".", found)
        else:
            found.append(f"{name}: not an ECS 8.11 field")


def _check(name: str, value: Any, kind: str, array: bool, found: list[str]) -> None:
    if kind in ("object", "flattened") and isinstance(value, dict):
        return
    values = value if isinstance(value, list) else [value]
    if array and not isinstance(value, list):
        found.append(f"{name}: ECS normalizes it to an array")
    for v in values:
        if not _typed(kind, v):
            found.append(f"{name}: {v!r} is not of ECS type {kind}")


def _typed(kind: str, value: Any) -> bool:
    if kind in NUMERIC:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "date":
        try:
            dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return False
        return True
    if kind in TEXTUAL:
        return isinstance(value, str)
    return True


def _get(doc: dict[str, Any], dotted: str) -> Any:
    node: Any = doc
    for part in [dotted] if dotted in doc else dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
