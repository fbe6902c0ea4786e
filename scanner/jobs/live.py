"""In-memory view of running scans: latest progress, findings so far, and watchers.

All methods run on the event loop; the engine's threads hand events over with
``loop.call_soon_threadsafe``. A watcher that subscribes late first receives the latest
progress and every finding so far, so no finding is missed and progress always comes first.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from scanner.engine import Progress, ScanListener
from scanner.verdicts import Finding

DONE = object()
"""Sentinel pushed to watchers when the scan reaches a final state."""

Event = Progress | Finding | object


@dataclass
class LiveScan:
    scan_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    interrupted: bool = False  # cancelled by shutdown (re-run later) rather than by a caller
    progress: Progress | None = None
    findings: list[Finding] = field(default_factory=list)
    watchers: set[asyncio.Queue[Event]] = field(default_factory=set)

    def publish(self, event: Event) -> None:
        if isinstance(event, Progress):
            self.progress = event
        elif isinstance(event, Finding):
            self.findings.append(event)
        for queue in self.watchers:
            queue.put_nowait(event)

    async def watch(self) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        if self.progress:  # where the scan is, then what it found so far, then live events
            queue.put_nowait(self.progress)
        for finding in self.findings:
            queue.put_nowait(finding)
        self.watchers.add(queue)
        try:
            while True:
                event = await queue.get()
                if event is DONE:
                    return
                yield event
        finally:
            self.watchers.discard(queue)


class LoopListener(ScanListener):
    """Bridges engine-thread callbacks to a :class:`LiveScan` on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, live: LiveScan) -> None:
        self.loop = loop
        self.live = live

    def on_progress(self, progress: Progress) -> None:
        self.loop.call_soon_threadsafe(self.live.publish, progress)

    def on_finding(self, finding: Finding) -> None:
        self.loop.call_soon_threadsafe(self.live.publish, finding)
