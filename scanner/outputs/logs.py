"""The service's own log: plain text, or ECS JSON lines (``[logging] format = "json"``).

JSON lines come from Elastic's ``ecs-logging`` formatter, stamped with this product's ECS
version and ``service.name``; ``extra={"event.action": ...}`` fields land as nested ECS fields.
At INFO the log has one line per scan start and end (with the verdict), per ruleset change and
per quarantine action (the audit trail is logged as it is written).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from scanner.outputs.ecs import ECS_VERSION

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(fmt: str, level: str | int) -> None:
    """Replace the root handlers with one on stderr in ``fmt`` (text or json) at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EcsFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def _EcsFormatter() -> logging.Formatter:
    import ecs_logging

    class EcsFormatter(ecs_logging.StdlibFormatter):
        def format_to_ecs(self, record: logging.LogRecord) -> dict[str, Any]:
            doc: dict[str, Any] = super().format_to_ecs(record)
            doc["ecs.version"] = ECS_VERSION
            doc.setdefault("service.name", "avscan")
            doc.setdefault("event.dataset", "avscan.log")
            return doc

    return EcsFormatter(exclude_fields=["log.original"])
