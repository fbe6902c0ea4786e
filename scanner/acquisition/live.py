"""Control of a live QEMU/KVM guest over QMP: where its RAM is, pause and resume, liveness.

Contract:
- :meth:`QemuGuest.ram_path` finds the guest's RAM file from QEMU itself (the
  ``memory-backend-file`` object's ``mem-path``), so a user can name a guest by its QMP socket.
- :meth:`QemuGuest.paused` pauses the guest for at most ``max_pause`` seconds: a watchdog
  resumes it when the bound is reached even if the scan goes on, and the context always resumes
  a guest it paused. :attr:`PauseRecord` says how long the guest was really paused and whether
  the bound cut the pause short.
- :meth:`QemuGuest.ram_layout` tells where guest RAM lives in QEMU's process (any guest: plain
  ``-m``, memfd, hugetlbfs, file), for :class:`~scanner.acquisition.memory.qemuproc.QemuProcessMemory`.
- :meth:`QemuGuest.gone` costs no QMP round trip (it is asked before every window): QEMU's
  process is watched through a pidfd and its socket for end of file.
- Every QMP call is serialised (QEMU's monitor protocol is one request at a time).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.acquisition.memory.qemuproc import ProcessWatch
from scanner.acquisition.qmp import QmpClient, QmpError
from scanner.acquisition.ramlayout import RamLayout, memory_backends, query_layout
from scanner.errors import InvalidArgument, SourceError


@dataclass
class PauseRecord:
    paused_seconds: float = 0.0
    cut_short: bool = False
    was_running: bool = True


@contextmanager
def bounded_pause(
    running: Callable[[], bool], stop: Callable[[], None], cont: Callable[[], None], max_pause: float
) -> Iterator[PauseRecord]:
    """Stop a running guest for at most ``max_pause`` seconds (a watchdog resumes it when the bound
    is reached, even if the scan goes on); always resume what this stopped; ``cont`` must not raise
    for a guest that is gone. A guest paused by someone else is left as it is."""
    record = PauseRecord(was_running=running())
    if not record.was_running:
        yield record
        return
    stop()
    began = time.monotonic()
    resumed = threading.Event()
    once = threading.Lock()

    def resume(cut_short: bool) -> None:
        with once:
            if resumed.is_set():
                return
            resumed.set()
        record.paused_seconds = time.monotonic() - began
        record.cut_short = cut_short
        cont()

    watchdog = threading.Timer(max_pause, resume, args=(True,))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield record
    finally:
        watchdog.cancel()
        resume(False)


class QemuGuest:
    def __init__(self, qmp_path: str, timeout: float = 10.0) -> None:
        if not Path(qmp_path).is_socket():
            raise InvalidArgument("target.guest.qmp", f"{qmp_path} is not a QMP unix socket")
        self._client = QmpClient(Path(qmp_path), timeout)
        self._lock = threading.Lock()
        self._gone = ""
        try:
            self._client.connect(time.monotonic() + timeout)
        except QmpError as e:
            raise SourceError(qmp_path, f"cannot talk to QEMU: {e.message}") from e
        self.pid = self._client.peer_pid()
        self._watch = ProcessWatch(self.pid) if self.pid > 0 else None

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        with self._lock:
            try:
                return self._client.execute(command, arguments)
            except QmpError as e:
                if "closed" in e.message or "socket error" in e.message:
                    self._gone = "guest stopped: QEMU closed its QMP socket"
                raise

    def backends(self) -> dict[str, str]:
        """The guest's memory backends: QOM id -> type (``memory-backend-ram``, ``-file``, ``-memfd``...)."""
        return memory_backends(self.execute)

    def ram_layout(self) -> RamLayout:
        """QEMU's pid and the guest-physical RAM ranges with their host addresses in its process."""
        if self.pid <= 0:
            raise SourceError("qmp", "cannot tell QEMU's process id from its QMP socket")
        return query_layout(self.execute, self.pid)

    def hmp(self, command: str) -> str:
        return str(self.execute("human-monitor-command", {"command-line": command}))

    def ram_path(self) -> str:
        """The file backing guest RAM; SourceError when there is not exactly one shared file."""
        objects = self.execute("qom-list", {"path": "/objects"})
        backends = [o["name"] for o in objects if o.get("type") == "child<memory-backend-file>"]
        if len(backends) != 1:
            raise SourceError("qmp", f"expected one memory-backend-file, QEMU has {len(backends)}; give the RAM path")
        path = self.execute("qom-get", {"path": f"/objects/{backends[0]}", "property": "mem-path"})
        shared = self.execute("qom-get", {"path": f"/objects/{backends[0]}", "property": "share"})
        if not shared:
            raise SourceError(str(path), "guest RAM backend is not share=on: the file does not show live memory")
        return str(path)

    def status(self) -> str:
        return str(self.execute("query-status")["status"])

    def gone(self) -> str:
        """Why the guest is gone, or "" while QEMU runs; no QMP round trip."""
        if not self._gone:
            if self._watch is not None and self._watch.exited():
                self._gone = f"guest stopped: QEMU process {self.pid} exited"
            elif self._client.closed():
                self._gone = "guest stopped: QEMU closed its QMP socket"
        return self._gone

    @contextmanager
    def paused(self, max_pause: float) -> Iterator[PauseRecord]:
        """Pause for at most ``max_pause`` seconds; always resume what this paused."""
        with bounded_pause(
            lambda: self.status() == "running", lambda: self.execute("stop"), self._cont, max_pause
        ) as record:
            yield record

    def _cont(self) -> None:
        with contextlib.suppress(QmpError):  # a guest that is gone has nothing to resume
            self.execute("cont")

    def __enter__(self) -> QemuGuest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()
        if self._watch is not None:
            self._watch.close()
