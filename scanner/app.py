"""The service's core, assembled from config: state, signature store, engine, scan jobs.

Imports no grpc: the API edge (``scanner.api``) and the CLI drive this object.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from scanner.config import Config
from scanner.engine import Engine, Ruleset
from scanner.engine.cache import ResultCache
from scanner.errors import FailedPrecondition
from scanner.fleet.leadership import EVENT_RELAY, Leadership
from scanner.fleet.manager import FleetScanManager
from scanner.jobs.manager import ScanManager
from scanner.outputs.metrics import Metrics, Readers
from scanner.outputs.pgqueue import PostgresEventQueue
from scanner.outputs.queue import EventQueue
from scanner.outputs.relay import EventRelay
from scanner.outputs.sinks import build_sink
from scanner.rulesets.compiler import CompileLimits
from scanner.rulesets.fleet_store import FleetRulesetStore
from scanner.rulesets.follower import RulesetFollower
from scanner.rulesets.store import RulesetStore
from scanner.state.backends import open_state
from scanner.state.postgres import PostgresDatabase

if TYPE_CHECKING:
    from scanner.vcenter.service import VCenterService

log = logging.getLogger(__name__)


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_state(config.state, config.state_dir, config.fleet)
        fleet = isinstance(self.db, PostgresDatabase)
        local = RulesetStore(
            config.state_dir / "rulesets",
            audit=None if fleet else self.db.audit,  # in a fleet, the fleet's store audits
            limits=CompileLimits(probe_seconds=config.rule_probe_seconds, max_total_bytes=config.max_ruleset_bytes),
            trust=config.trusted_keys,
        )
        self.store: RulesetStore | FleetRulesetStore = local
        self.follower: RulesetFollower | None = None
        if isinstance(self.db, PostgresDatabase):  # signatures once for the fleet; compiled here
            self.store = FleetRulesetStore(self.db, local)
        self.cache = self._cache(config)
        self.engine = Engine(config.engine, self.cache)
        self.scans: ScanManager
        if isinstance(self.db, PostgresDatabase):  # a fleet: the queue is the shared PostgreSQL
            self.scans = FleetScanManager(
                self.db, self.engine, self.ruleset, config.files, config.max_concurrent_scans,
                config.state_dir / "profiles", config.fleet, config.jobs,
            )  # fmt: skip
        else:
            self.scans = ScanManager(
                self.db,
                self.engine,
                self.ruleset,
                config.files,
                config.max_concurrent_scans,
                profile_cache=config.state_dir / "profiles",
                limits=config.jobs,
            )
        self.vcenter: VCenterService | None = None
        if config.vcenter is not None:
            from scanner.vcenter.service import VCenterService

            self.vcenter = VCenterService(config.vcenter, self.scans, self.db, config.state_dir, config.fleet)
        self.events: EventQueue | None = None
        self.relay: EventRelay | None = None
        sinks = [build_sink(i, raw) for i, raw in enumerate(config.event_sinks)]
        if sinks and isinstance(self.db, PostgresDatabase):  # a fleet: one relay per sink, from PostgreSQL
            self.events = cast(EventQueue, PostgresEventQueue(self.db, [s.name for s in sinks]))
            db = self.db
            leads = {s.name: Leadership(db.url, EVENT_RELAY, f"events {s.name}", db.appliance) for s in sinks}
            self.relay = EventRelay(self.events, sinks, leads, poll=config.fleet.poll_seconds)
        elif sinks:
            self.events = EventQueue(config.state_dir / "state.sqlite3", [s.name for s in sinks])
            self.relay = EventRelay(self.events, sinks)
        if self.relay is not None:
            self.scans.emit_events = True
            relay = self.relay
            self.scans.on_finish.append(lambda *_: relay.wake())
            if self.vcenter is not None:
                self.vcenter.events, self.vcenter.on_event = self.events, relay.wake

        self.metrics: Metrics | None = None
        self.metrics_port = 0
        if config.metrics_listen:
            self.metrics = Metrics(self._readers())
            self.scans.on_finish.append(self.metrics.observe)

    def _readers(self) -> Readers:
        def ruleset() -> tuple[int, float] | None:
            running = self.store.active()  # what this appliance runs (in a fleet: maybe not the fleet's yet)
            if running is None:
                return None
            info = self.store.get(running.digest)
            return info.version, info.pushed_at

        events = self.events
        vcenter = self.vcenter
        return Readers(
            scan_states=self.db.state_counts,
            ruleset=ruleset,
            outbox=vcenter.store.action_counts if vcenter is not None else None,
            events=(lambda: [(s.sink, s.backlog, s.attempts) for s in events.states()]) if events else None,
        )

    async def start_outputs(self) -> None:
        """Start draining the event queue into the sinks (what an earlier run left queued first),
        and the metrics endpoint."""
        if self.relay is not None:
            self.relay.start()
        if self.metrics is not None:
            self.metrics_port = self.metrics.serve(self.config.metrics_listen)
            host = self.config.metrics_listen.rsplit(":", 1)[0]
            log.info("metrics on http://%s:%d/metrics", host, self.metrics_port)

    async def stop_outputs(self) -> None:
        """Stop the relay; whatever is still queued is delivered at the next start."""
        if self.relay is not None:
            await self.relay.stop()
        if self.metrics is not None:
            self.metrics.close()

    async def start_vcenter(self) -> None:
        """Start the vCenter trigger loop and outbox relay (after the scan workers run)."""
        if self.vcenter is not None:
            await self.vcenter.start()

    async def stop_vcenter(self) -> None:
        """Stop taking vCenter triggers; jobs in flight resume at the next start."""
        if self.vcenter is not None:
            await self.vcenter.stop()

    def prepare(self) -> None:
        """Blocking start-up work: import the parsers once (``scanner.acquisition.preload``),
        install the default ruleset on first start (in a fleet: on the first appliance, and start
        following the fleet's active ruleset)."""
        from scanner.acquisition.preload import preload

        preload()
        info = self.store.ensure_default(self.config.signatures_dir)
        if info is not None:
            log.info("activated default ruleset version %d (%s)", info.version, info.digest)
        if isinstance(self.store, FleetRulesetStore):  # follow the fleet's pointer from now on
            self.follower = RulesetFollower(self.store, self.config.fleet.poll_seconds)
            self.follower.start()

    def ruleset(self, digest: str = "") -> Ruleset:
        """The pinned ruleset ``digest``, or the active one."""
        if digest:
            return self.store.load(digest)
        active = self.store.active()
        if active is None:
            raise FailedPrecondition("no active ruleset: push and activate one first")
        return active

    @staticmethod
    def _cache(config: Config) -> ResultCache | None:
        """The result cache every scan of this appliance shares (None when disabled)."""
        if not config.cache.enabled:
            return None
        where = config.cache.url or config.cache.path or config.state_dir / "result-cache.sqlite3"
        return ResultCache(where, config.cache.max_bytes)

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        self.engine.close(wait=not self.scans.stuck())  # a stuck reader is never waited for
        if self.events is not None:
            self.events.close()
        if self.cache is not None:
            self.cache.close()
        self.db.close()
