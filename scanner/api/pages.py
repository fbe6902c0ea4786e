"""Opaque page tokens for every List RPC (AIP-158).

A token is base64url of a small JSON cursor: the listing it belongs to, the request's filter and
the position to resume after. Clients must treat it as opaque; the server rejects anything it did
not issue for this listing and filter with INVALID_ARGUMENT on ``page_token`` (never INTERNAL).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from scanner.errors import InvalidArgument

MAX_TOKEN = 512
_VERSION = 1


def encode(listing: str, position: int, where: str = "") -> str:
    cursor = {"v": _VERSION, "l": listing, "f": where, "p": position}
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(token: str, listing: str, where: str = "", field: str = "page_token") -> int | None:
    """The position in ``token`` (None for the first page); INVALID_ARGUMENT if it is not ours."""
    if not token:
        return None
    cursor: Any = None
    if len(token) <= MAX_TOKEN and token.isascii():
        try:
            cursor = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except (binascii.Error, ValueError):
            cursor = None
    position = cursor.get("p") if isinstance(cursor, dict) else None
    valid = (
        isinstance(position, int)
        and not isinstance(position, bool)
        and 0 <= position < 1 << 62
        and cursor.get("v") == _VERSION
        and cursor.get("l") == listing
    )
    if not valid:
        raise InvalidArgument(field, "not a page token this service issued for this listing")
    if cursor.get("f") != where:
        raise InvalidArgument(field, "issued for a different filter; start again without a page_token")
    return int(cursor["p"])


def page_size(requested: int, default: int, maximum: int, field: str = "page_size") -> int:
    """AIP-158: 0 means the default; negative is INVALID_ARGUMENT; above the maximum is clamped."""
    if requested < 0:
        raise InvalidArgument(field, "must not be negative")
    return min(requested or default, maximum)
