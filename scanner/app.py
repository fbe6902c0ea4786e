"""The service's core, assembled from config: state, signature store, engine, scan jobs.

Imports no grpc: the API edge (``scanner.api``) and the CLI drive this object.
"""

from __future__ import annotations

import logging

from scanner.config import Config
from scanner.engine import Engine, Ruleset
from scanner.errors import FailedPrecondition
from scanner.jobs.manager import ScanManager
from scanner.rulesets.store import RulesetStore
from scanner.state.db import Database

log = logging.getLogger(__name__)


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(config.state_dir / "state.sqlite3")
        self.store = RulesetStore(config.state_dir / "rulesets", audit=self.db.audit)
        self.engine = Engine(config.engine)
        self.scans = ScanManager(self.db, self.engine, self.ruleset, config.files, config.max_concurrent_scans)

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

    def close(self) -> None:
        self.engine.close()
        self.db.close()
