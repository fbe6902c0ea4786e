"""Prometheus metrics at ``/metrics`` (``[server] metrics_listen`` / ``serve --metrics-listen``).

Counters and the duration histogram are fed by the scan manager's finish hook; gauges (scans by
state, queue depth, ruleset, vCenter outbox, event backlog) are read from durable state at scrape
time, so they are right after a restart too. Each App has its own registry (several services in
one test process never share series).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from scanner.state.db import ScanRecord
from scanner.verdicts import Verdict

DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


@dataclass(frozen=True)
class Readers:
    """What the scrape-time gauges read (each returns fresh values; blocking calls)."""

    scan_states: Callable[[], dict[str, int]]
    ruleset: Callable[[], tuple[int, float] | None]  # (version, pushed_at) of the active ruleset
    outbox: Callable[[], dict[str, int]] | None = None  # vCenter actions by state
    events: Callable[[], list[tuple[str, int, int]]] | None = None  # (sink, backlog, consecutive failures)


class Metrics:
    def __init__(self, readers: Readers) -> None:
        self.registry = CollectorRegistry()
        self.verdicts = Counter(
            "avscan_scans_finished",
            "Scans finished, by final state and verdict",
            ["state", "verdict"],
            registry=self.registry,
        )
        self.bytes = Counter(
            "avscan_scanned_bytes", "Bytes scanned by YARA, by target kind", ["kind"], registry=self.registry
        )
        self.duration = Histogram(
            "avscan_scan_duration_seconds",
            "Scan duration from start to verdict, by target kind",
            ["kind"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.cache = Counter(
            "avscan_cache_lookups",
            "Result cache lookups by units of finished scans",
            ["result"],
            registry=self.registry,
        )
        self.registry.register(_StateCollector(readers))
        self._server: Any = None

    def observe(self, record: ScanRecord, state: str, verdict: Verdict | None) -> None:
        """The scan manager's finish hook."""
        self.verdicts.labels(state, verdict.kind.value if verdict else "NONE").inc()
        if verdict is None:
            return
        c = verdict.coverage
        self.bytes.labels(record.target.kind).inc(c.bytes_scanned)
        self.cache.labels("hit").inc(c.cache_hits)
        self.cache.labels("miss").inc(c.cache_misses)
        if verdict.started_at and verdict.finished_at >= verdict.started_at:
            self.duration.labels(record.target.kind).observe(verdict.finished_at - verdict.started_at)

    def serve(self, listen: str) -> int:
        """Start the HTTP endpoint; returns its port (``listen`` may use port 0)."""
        host, _, port = listen.rpartition(":")
        self._server, _ = start_http_server(int(port), host.strip("[]"), registry=self.registry)
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _StateCollector(Collector):
    def __init__(self, readers: Readers) -> None:
        self.readers = readers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        states = GaugeMetricFamily("avscan_scans", "Scans by current state", labels=["state"])
        counts = self.readers.scan_states()
        for state in ("QUEUED", "RUNNING", "INTERRUPTED", "DONE", "CANCELLED"):
            states.add_metric([state], counts.get(state, 0))
        yield states
        yield GaugeMetricFamily("avscan_queue_depth", "Scans waiting for a worker", value=counts.get("QUEUED", 0))
        active = self.readers.ruleset()
        yield GaugeMetricFamily(
            "avscan_ruleset_version", "Version of the active ruleset", value=active[0] if active else 0
        )
        age = time.time() - active[1] if active else 0
        yield GaugeMetricFamily("avscan_ruleset_age_seconds", "Seconds since the active ruleset was pushed", value=age)
        if self.readers.outbox is not None:
            actions = self.readers.outbox()
            yield GaugeMetricFamily(
                "avscan_vcenter_outbox_depth", "vCenter actions waiting to be applied", value=actions.get("PENDING", 0)
            )
            yield GaugeMetricFamily(
                "avscan_vcenter_actions_failed", "vCenter actions given up on (FAILED)", value=actions.get("FAILED", 0)
            )
        if self.readers.events is not None:
            backlog = GaugeMetricFamily("avscan_event_backlog", "Event documents not yet delivered", labels=["sink"])
            failing = GaugeMetricFamily(
                "avscan_event_delivery_failures", "Consecutive failed deliveries of a sink", labels=["sink"]
            )
            for sink, queued, failures in self.readers.events():
                backlog.add_metric([sink], queued)
                failing.add_metric([sink], failures)
            yield backlog
            yield failing
