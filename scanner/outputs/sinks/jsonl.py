"""JSON lines in a local file, rotated by size (``events.jsonl`` -> ``.1`` ... ``.<keep>``).

Each batch is appended and fsynced before it counts as delivered. Filebeat/Elastic Agent or
Splunk's forwarder tail the file; rotation renames, so their inode tracking follows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scanner.errors import DeliveryError
from scanner.outputs.ecs import to_json
from scanner.outputs.sinks.base import Params, Sink


class JsonLinesSink(Sink):
    kind = "jsonl"
    batch_size = 500  # one fsync per batch

    def __init__(self, name: str, raw: Mapping[str, Any]) -> None:
        super().__init__(name)
        p = Params(name, raw, {"path", "max_bytes", "keep"})
        self.path = Path(p.get("path", str))
        self.max_bytes = int(p.get("max_bytes", int, 100 * 1024 * 1024))
        self.keep = int(p.get("keep", int, 5))

    def deliver(self, docs: Sequence[Mapping[str, Any]]) -> None:
        self.deliver_json([to_json(d) for d in docs])

    def deliver_json(self, texts: Sequence[str]) -> None:
        """The queued JSON text as is: one line per document (no decode, no re-encode)."""
        data = "".join(t + "\n" for t in texts).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size + len(data) > self.max_bytes:
                self._rotate()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o640)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise DeliveryError(f"{self.path}: {e.strerror}") from e

    def _rotate(self) -> None:
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.keep > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
