"""The real gRPC server in-process, on its own event loop in a thread, on a free port.

The synchronous :class:`scanner.api.client.Client` then talks to it over a real channel from
the test's thread, exactly as a remote caller would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from scanner.api.server import Running, start_server
from scanner.config import Config

T = TypeVar("T")


class ServerThread:
    """``start_server(config)`` on a private loop; ``stop()`` runs the server's graceful stop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)
        self._thread.start()
        try:
            self.running: Running = self.call(start_server(config))
        except BaseException:
            self._close_loop()
            raise
        self.address = f"127.0.0.1:{self.running.port}"
        self._stopped = False

    @property
    def app(self) -> Any:
        return self.running.app

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def begin_stop(self, grace: float | None = None) -> Future[None]:
        """Start the graceful stop without waiting for it (to observe the server meanwhile)."""
        self._stopped = True
        return asyncio.run_coroutine_threadsafe(self.running.stop(grace), self.loop)

    def stop(self, grace: float | None = 0.0) -> None:
        if not self._stopped:
            self.begin_stop(grace).result(60)
        self._close_loop()

    def _close_loop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()
