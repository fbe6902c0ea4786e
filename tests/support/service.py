"""The service as a real child process (``python -m scanner serve``), for crash and restart tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scanner.api.client import Client

READY = re.compile(r"avscan: serving on [^\s:]+:(\d+)")


class Service:
    """One run of the service: started on port 0; the port is read from its ready line."""

    def __init__(self, state_dir: Path, config: Path | None = None, listen: str = "127.0.0.1:0") -> None:
        self.state_dir = state_dir
        self.log = state_dir.parent / f"service-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "scanner"]
        if config is not None:
            cmd += ["--config", str(config)]
        cmd += ["--state-dir", str(state_dir), "serve", "--listen", listen]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
        self.port = self._wait_port()
        self.address = f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _wait_port(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = READY.search(self.output())
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError(f"service not ready within {timeout} s:\n{self.output()}")

    def client(self) -> Client:
        return Client(self.address, timeout=60)

    def health(self) -> int:
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or power loss."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the graceful shutdown path."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
