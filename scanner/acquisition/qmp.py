"""A small synchronous QMP client: JSON lines over QEMU's unix socket.

Used by the appliance to control live QEMU/KVM guests (find the RAM file, pause and resume) and
by the guest lab. QEMU serves one client per QMP socket at a time, so the appliance should have
a monitor socket of its own (a second ``-qmp`` option).

Contract: :meth:`QmpClient.connect` reads the greeting and negotiates capabilities;
:meth:`QmpClient.execute` sends one command with a fresh ``id`` and returns its ``return``
value, raising :class:`QmpError` on an ``error`` reply. Asynchronous events that arrive before
the reply are kept in :attr:`QmpClient.events` (oldest first), never mistaken for replies.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from pathlib import Path
from typing import Any

from scanner.errors import Unavailable


class QmpError(Unavailable):
    """QEMU answered a QMP command with an error, or the QMP socket failed."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(f"qmp {command}: {message}")
        self.command = command


class QmpClient:
    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._buf = b""
        self._next_id = 0

    def connect(self, deadline: float | None = None) -> None:
        """Connect (retrying until ``deadline`` while QEMU creates the socket) and negotiate."""
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                sock.close()
                if time.monotonic() > deadline:
                    raise QmpError("connect", f"{self.path}: {e}") from e
                time.sleep(0.05)
        self._sock = sock
        greeting = self._read_message(time.monotonic() + self.timeout)
        if "QMP" not in greeting:
            raise QmpError("connect", f"unexpected greeting {greeting!r}")
        self.execute("qmp_capabilities")

    def peer_pid(self) -> int:
        """The process id of the QEMU at the other end (``SO_PEERCRED``), 0 if the kernel cannot tell."""
        if self._sock is None:
            raise QmpError("peer", "not connected")
        creds = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, _uid, _gid = struct.unpack("3i", creds)
        return int(pid)

    def closed(self) -> bool:
        """True once QEMU has closed its end of the socket (checked without a round trip)."""
        if self._sock is None:
            return True
        try:
            ready, _, _ = select.select([self._sock], [], [], 0)
            if not ready:
                return False
            return self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def execute(self, command: str, arguments: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Run ``command`` and return its ``return`` value."""
        if self._sock is None:
            raise QmpError(command, "not connected")
        self._next_id += 1
        msg_id = self._next_id
        request: dict[str, Any] = {"execute": command, "id": msg_id}
        if arguments:
            request["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as e:
            raise QmpError(command, f"send failed: {e}") from e
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            msg = self._read_message(deadline, command)
            if "event" in msg:
                self.events.append(msg)
            elif msg.get("id") == msg_id:
                if "error" in msg:
                    err = msg["error"]
                    raise QmpError(command, f"{err.get('class')}: {err.get('desc')}")
                return msg.get("return")

    def wait_event(self, name: str, timeout: float | None = None) -> dict[str, Any]:
        """Return (and remove) the first event called ``name``, reading more until it arrives."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            for i, event in enumerate(self.events):
                if event.get("event") == name:
                    return self.events.pop(i)
            msg = self._read_message(deadline, f"wait {name}")
            if "event" in msg:
                self.events.append(msg)

    def _read_message(self, deadline: float, command: str = "connect") -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QmpError(command, "timed out waiting for QEMU")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError as e:
                raise QmpError(command, "timed out waiting for QEMU") from e
            except OSError as e:
                raise QmpError(command, f"socket error: {e}") from e
            if not chunk:
                raise QmpError(command, "QEMU closed the QMP socket")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if not isinstance(msg, dict):
            raise QmpError(command, f"unexpected message {msg!r}")
        return msg
