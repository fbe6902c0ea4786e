"""The service's core, assembled from config: state, signature store, engine, scan jobs.

Imports no grpc: the API edge (``scanner.api``) and the CLI drive this object.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scanner.config import Config
from scanner.engine import Engine, Ruleset
from scanner.engine.cache import ResultCache
from scanner.errors import FailedPrecondition
from scanner.fleet.manager import FleetScanManager
from scanner.jobs.manager import ScanManager
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
        self.store = RulesetStore(config.state_dir / "rulesets", audit=self.db.audit)
        self.cache = self._cache(config)
        self.engine = Engine(config.engine, self.cache)
        self.scans = ScanManager(
            self.db,
            self.engine,
            self.ruleset,
            config.files,
            config.max_concurrent_scans,
            profile_cache=config.state_dir / "profiles",
        )
        if isinstance(self.db, PostgresDatabase):  # a fleet: the queue is the shared PostgreSQL
            self.scans = FleetScanManager(
                self.db, self.engine, self.ruleset, config.files, config.max_concurrent_scans,
                config.state_dir / "profiles", config.fleet,
            )  # fmt: skip
        self.vcenter: VCenterService | None = None
        if config.vcenter is not None:
            from scanner.vcenter.service import VCenterService

            self.vcenter = VCenterService(config.vcenter, self.scans, self.db, config.state_dir)

    async def start_vcenter(self) -> None:
        """Start the vCenter trigger loop and outbox relay (after the scan workers run)."""
        if self.vcenter is not None:
            await self.vcenter.start()

    async def stop_vcenter(self) -> None:
        """Stop taking vCenter triggers; jobs in flight resume at the next start."""
        if self.vcenter is not None:
            await self.vcenter.stop()

    def prepare(self) -> None:
        """Blocking start-up work: install the default ruleset on first start."""
        info = self.store.ensure_default(self.config.signatures_dir)
        if info is not None:
            log.info("activated default ruleset version %d (%s)", info.version, info.digest)

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
        self.engine.close()
        if self.cache is not None:
            self.cache.close()
        self.db.close()
