"""Keeps one appliance on the fleet's active ruleset: LISTEN for pointer moves, poll as a net.

Contract: once started, :meth:`FleetRulesetStore.sync` runs when the pointer's NOTIFY arrives
(:data:`scanner.rulesets.fleet_store.CHANNEL`) and at least every ``poll_seconds`` (a lost
notification, a lost connection, or a PostgreSQL restart delays a move by at most that). Errors
are logged and retried at the next turn; the thread never dies of them. ``stop`` closes the
listener, which ends a wait at once.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from scanner.errors import ScannerError
from scanner.rulesets.fleet_store import CHANNEL, FleetRulesetStore

log = logging.getLogger(__name__)


class RulesetFollower:
    def __init__(self, store: FleetRulesetStore, poll_seconds: float) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._listener: Any = None
        self._thread = threading.Thread(target=self._run, name="ruleset-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop following; closing the listener ends a wait in progress at once."""
        self._stop.set()
        listener = self._listener
        if listener is not None:
            listener.close()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.store.sync()
            except ScannerError as e:
                log.warning("following the fleet's ruleset: %s", e.message)
            self._wait()
        self._drop()

    def _wait(self) -> None:
        """Until a pointer move is announced or ``poll_seconds`` pass (or a connection fails)."""
        import psycopg

        try:
            if self._listener is None or self._listener.closed:
                self._listener = psycopg.connect(self.store.db.url, autocommit=True, connect_timeout=10)
                self._listener.execute(f'LISTEN "{CHANNEL}"')
                return  # a move between the last sync and LISTEN would be missed: sync again now
            for _ in self._listener.notifies(timeout=self.poll_seconds, stop_after=1):
                pass
        except psycopg.Error as e:
            if self._stop.is_set():
                return  # closed under us by stop()
            log.warning("ruleset listener at %s: %s", self.store.db.where, e)
            self._drop()
            self._stop.wait(min(self.poll_seconds, 1.0))

    def _drop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
