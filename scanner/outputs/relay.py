"""The event relay: drains the durable queue into each sink, independently, with backoff.

Contract:
- One task per sink; a slow or dead sink never holds back another (each has its own cursor).
- A batch is delivered whole or retried whole: after a failure the sink waits
  ``min(MAX_BACKOFF, 0.5 * 2**n)`` seconds (jittered) and tries the same batch again, forever;
  the backlog stays on disk meanwhile (and across restarts).
- ``wake()`` is called when new documents were queued; without it the relay still polls.
- ``stop()`` cancels the tasks; a batch in flight is redelivered at the next start.
- With ``leads`` (a fleet on PostgreSQL), a sink is drained only while this appliance holds its
  role (one relay per sink in the fleet); the others check every ``poll`` seconds and take over
  when the holder dies, from the cursor it last confirmed.
- A sink that raises anything else is retried the same way (and logged with its traceback): the
  relay task never dies, so the backlog metric tells the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from scanner.errors import DeliveryError
from scanner.outputs.queue import EventQueue
from scanner.outputs.sinks import Sink

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
POLL = 5.0


class Role(Protocol):
    def acquire(self) -> bool: ...

    def release(self) -> None: ...


class EventRelay:
    def __init__(
        self, queue: EventQueue, sinks: Sequence[Sink], leads: Mapping[str, Role] | None = None, poll: float = POLL
    ) -> None:
        self.queue = queue
        self.sinks = tuple(sinks)
        self.leads = dict(leads or {})
        self.poll = poll
        self._wake = {s.name: asyncio.Event() for s in self.sinks}
        self._tasks: list[asyncio.Task[None]] = []
        self.failures: dict[str, int] = {s.name: 0 for s in self.sinks}

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._drain(s), name=f"events-{s.name}") for s in self.sinks]

    def wake(self) -> None:
        for event in self._wake.values():
            event.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sink in self.sinks:
            await asyncio.to_thread(sink.close)
        for lead in self.leads.values():  # another appliance takes the sink over at once
            await asyncio.to_thread(lead.release)

    async def _drain(self, sink: Sink) -> None:
        wake = self._wake[sink.name]
        lead = self.leads.get(sink.name)
        while True:
            wake.clear()
            leading = lead is None or await asyncio.to_thread(lead.acquire)
            batch = await asyncio.to_thread(self.queue.pending, sink.name, sink.batch_size) if leading else []
            if not batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.poll)
                continue
            try:
                await asyncio.to_thread(sink.deliver_json, [text for _, text in batch])
            except DeliveryError as e:
                await self._backoff(sink, e)
                continue
            except Exception as e:  # a sink's bug: logged with its traceback, retried like an outage
                log.exception("event sink %s failed unexpectedly", sink.name)
                await self._backoff(sink, DeliveryError(f"{type(e).__name__}: {e}"))
                continue
            await asyncio.to_thread(self.queue.delivered, sink.name, batch[-1][0])
            if len(batch) < sink.batch_size:  # caught up: forget what every sink has (not per batch)
                await asyncio.to_thread(self.queue.prune)

    async def _backoff(self, sink: Sink, error: DeliveryError) -> None:
        self.failures[sink.name] += 1
        attempts = await asyncio.to_thread(self.queue.failed, sink.name, error.message, time.time())
        delay = min(MAX_BACKOFF, 0.5 * 2 ** min(attempts - 1, 7)) * (0.8 + 0.4 * random.random())  # noqa: S311
        level = logging.WARNING if attempts < 5 else logging.ERROR
        log.log(level, "event sink %s: %s (attempt %d, retry in %.1f s)", sink.name, error.message, attempts, delay)
        await asyncio.sleep(delay)
