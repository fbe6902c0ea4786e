"""In-memory view of running scans: latest progress, findings so far, and watchers.

All methods run on the event loop; the engine's threads hand events over with
``loop.call_soon_threadsafe``. A watcher that subscribes late first receives the latest
progress and every finding so far, so no finding is missed and progress always comes first.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
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
    beat: float = 0.0  # time.monotonic() of the scan's last sign of progress (set from its threads)
    abandon_at: float = math.inf  # time.monotonic() after which a cancelled scan's thread is given up on
    stalled: str = ""  # set by the watchdog: why it cancelled the scan
    progress: Progress | None = None
    findings: list[Finding] = field(default_factory=list)
    watchers: set[asyncio.Queue[Event]] = field(default_factory=set)

    def cancel_requested(self, grace: float) -> None:
        """Ask the scan to stop; its thread is abandoned if it has not returned ``grace`` seconds
        from now (an earlier limit stands)."""
        self.abandon_at = min(self.abandon_at, time.monotonic() + grace)
        self.cancel.set()

    @property
    def cancelled_by_caller(self) -> bool:
        return self.cancel.is_set() and not self.stalled and not self.interrupted

    @property
    def abandon_reason(self) -> str:
        """Why the scan's thread was given up on (for its verdict)."""
        if self.stalled:
            return f"{self.stalled}; the scan was stopped and its reader abandoned"
        if self.interrupted:
            return "interrupted by shutdown; the scan did not stop in time"
        return "cancelled; the scan did not stop in time and its reader was abandoned"

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

    def on_beat(self) -> None:
        self.live.beat = time.monotonic()  # a float store: safe from any thread
