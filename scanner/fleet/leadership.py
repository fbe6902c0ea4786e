"""One appliance of the fleet at a time for a role (the vCenter event watcher, an event sink's relay).

Contract:
- A role is a PostgreSQL session-level advisory lock (``pg_try_advisory_lock(namespace,
  hashtext(role))``) held on a connection of its own. ``acquire`` never blocks: True when this
  appliance holds the role now (it took it, or still has it), False when another one does.
- Leadership lives as long as that connection: when the holder dies (kill -9, host down),
  PostgreSQL ends its session and the lock is free for the next ``acquire`` of another appliance.
  A lost connection (PostgreSQL restart, network) makes ``acquire`` return False until it takes
  the lock again; callers stop acting as leader when it returns False.
- A dead host is noticed by TCP keepalives on both ends (about ``KEEPALIVE`` seconds), not by a
  heartbeat: a frozen but connected holder (SIGSTOP) keeps the role.
- Blocking calls; thread-safe only in the sense that one task drives one ``Leadership``.
"""

from __future__ import annotations

import logging
from typing import Any

from scanner.errors import Unavailable

log = logging.getLogger(__name__)

VCENTER_WATCHER = 7355610  # namespace of the vCenter event watcher and outbox relay roles
EVENT_RELAY = 7355611  # namespace of the event sinks' relays
KEEPALIVE = 10


class Leadership:
    def __init__(self, url: str, namespace: int, role: str, appliance: str) -> None:
        self.url = url
        self.namespace = namespace
        self.role = role
        self.appliance = appliance
        self._conn: Any = None
        self._held = False

    def acquire(self) -> bool:
        """Hold the role: True when this appliance is its leader now."""
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = None
                self._conn = psycopg.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=10,
                    application_name=f"avscan {self.appliance} leads {self.role}"[:63],
                    keepalives=1,
                    keepalives_idle=KEEPALIVE,
                    keepalives_interval=2,
                    keepalives_count=3,
                    options=f"-c tcp_keepalives_idle={KEEPALIVE} -c tcp_keepalives_interval=2"
                    " -c tcp_keepalives_count=3",
                )
            if self._held:  # still ours while the session lives
                self._conn.execute("SELECT 1")
                return True
            row = self._conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (self.namespace, self.role)
            ).fetchone()
        except psycopg.Error as e:
            log.warning("leadership of %s: %s", self.role, str(e).strip())
            self.release()
            return False
        self._held = bool(row[0])
        if self._held:
            log.info("this appliance now leads %s", self.role)
        return self._held

    def release(self) -> None:
        """Give the role up (closing the session frees the lock)."""
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            try:
                conn.close()
            except Exception as e:  # already broken: the session is gone either way
                log.debug("closing the leadership connection of %s: %s", self.role, e)


def leaders(conn: Any, namespace: int) -> dict[str, str]:
    """Who holds which role of ``namespace`` now: {application_name: pid} of the lock holders
    (tests and the fleet view; ``conn`` is any psycopg connection)."""
    try:
        rows = conn.execute(
            "SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.classid = %s AND l.granted",
            (namespace,),
        ).fetchall()
    except Exception as e:
        raise Unavailable(f"reading the fleet's leaders: {e}") from e
    return {str(name): str(pid) for name, pid in rows}
