"""The event sink interface: where ECS documents leave the appliance.

Contract for implementations:
- ``deliver(docs)`` returns only once the receiver has every document of the batch (as far as the
  transport can tell: a file fsynced, a TCP peer that read to the end, a webhook that answered 2xx);
  otherwise it raises :class:`~scanner.errors.DeliveryError` and the whole batch is retried later,
  so a receiver may see a document twice (at-least-once; ``event.id`` is stable for dedup).
- Constructors validate their parameters and raise ``ConfigError`` naming the key; they do not
  connect (an unreachable SIEM at start-up is an outage to ride out, not a config error).
- Calls block; the relay runs them off the event loop, one thread per sink at a time.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from scanner.errors import ConfigError


class Sink(abc.ABC):
    kind: ClassVar[str]
    batch_size: ClassVar[int] = 100

    def __init__(self, name: str) -> None:
        self.name = name

    @abc.abstractmethod
    def deliver(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """Hand ``docs`` to the receiver, or raise DeliveryError."""

    def deliver_json(self, texts: Sequence[str]) -> None:
        """Hand documents queued as compact JSON text; sinks that ship JSON as is override it."""
        self.deliver([json.loads(t) for t in texts])

    def close(self) -> None:  # noqa: B027 - most sinks hold nothing open between batches
        """Release connections or files."""


class Params:
    """Typed reads of one sink's config table, naming ``events.sinks.<name>.<key>`` on error."""

    def __init__(self, name: str, raw: Mapping[str, Any], allowed: set[str]) -> None:
        self.where = f"events.sinks.{name}"
        unknown = sorted(set(raw) - allowed - {"kind", "name"})
        if unknown:
            raise ConfigError(f"{self.where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(allowed))})")
        self.raw = raw

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if key not in self.raw:
            if default is None:
                raise ConfigError(f"{self.where}.{key}: required")
            return default
        value = self.raw[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{self.where}.{key}: wrong type {type(value).__name__}")
        return value
