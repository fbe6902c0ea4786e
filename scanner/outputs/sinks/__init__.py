"""Event sinks by kind. Adding one = a module on ``base.Sink`` + one line in ``REGISTRY`` + a test."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from scanner.errors import ConfigError
from scanner.outputs.sinks.base import Sink


def _jsonl(name: str, raw: Mapping[str, Any]) -> Sink:
    from scanner.outputs.sinks.jsonl import JsonLinesSink

    return JsonLinesSink(name, raw)


def _syslog(name: str, raw: Mapping[str, Any]) -> Sink:
    from scanner.outputs.sinks.syslog import SyslogSink

    return SyslogSink(name, raw)


def _cef(name: str, raw: Mapping[str, Any]) -> Sink:
    from scanner.outputs.sinks.cef import CefSink

    return CefSink(name, raw)


def _webhook(name: str, raw: Mapping[str, Any]) -> Sink:
    from scanner.outputs.sinks.webhook import WebhookSink

    return WebhookSink(name, raw)


REGISTRY: dict[str, Callable[[str, Mapping[str, Any]], Sink]] = {
    "jsonl": _jsonl,
    "syslog": _syslog,
    "cef": _cef,
    "webhook": _webhook,
}


def build_sink(index: int, raw: Any) -> Sink:
    """The sink for one ``[[events.sinks]]`` table; ConfigError names the key that is wrong."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"events.sinks[{index}]: must be a table")
    kind = raw.get("kind")
    if kind not in REGISTRY:
        raise ConfigError(f"events.sinks[{index}].kind: one of {', '.join(sorted(REGISTRY))}")
    name = raw.get("name", f"{kind}{index}")
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"events.sinks[{index}].name: letters, digits and _ only")
    return REGISTRY[kind](name, raw)


__all__ = ["REGISTRY", "Sink", "build_sink"]
