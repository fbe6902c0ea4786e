"""A real PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` in a temporary directory.

Debian's ``postgresql`` package provides the binaries; no system service is used. The server
listens on a free loopback port (and a socket in its own directory), runs as the ``postgres``
user (``initdb`` refuses root), and is stopped by its PID at teardown. Under ``CI=true`` a missing
PostgreSQL fails the test instead of skipping it.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class PostgresServer:
    directory: Path
    port: int
    pid: int

    def url(self, database: str = "avscan") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def restart(self) -> PostgresServer:
        """Stop (fast) and start again on the same data and port: a PostgreSQL restart mid-load."""
        _pg_ctl(self.directory, "stop", "-m", "fast")
        return _start(self.directory, self.port)


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
    command = list(args) if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)


def _pg_ctl(directory: Path, *args: str) -> None:
    bindir = _bindir()
    assert bindir is not None
    _as_postgres(str(bindir / "pg_ctl"), "-D", str(directory / "data"), "-w", *args)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(directory: Path, port: int) -> PostgresServer:
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={directory}"
    _pg_ctl(directory, "-l", str(directory / "log"), "-o", options, "start")
    pid = int((directory / "data" / "postmaster.pid").read_text().split()[0])
    return PostgresServer(directory, port, pid)


def start_postgres(directory: Path) -> PostgresServer:
    """Create a cluster in ``directory`` (trust auth on loopback only) and start it."""
    bindir = _bindir()
    if bindir is None:
        reason = "PostgreSQL is not installed (Debian postgresql)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chmod(directory.parent, 0o755)
        shutil.chown(directory, "postgres", "postgres")
    _as_postgres(str(bindir / "initdb"), "-D", str(directory / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
    server = _start(directory, _free_port())
    _as_postgres(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "avscan")
    return server


def stop_postgres(server: PostgresServer) -> None:
    try:
        _pg_ctl(server.directory, "stop", "-m", "immediate")
    except subprocess.CalledProcessError:
        pid_file = server.directory / "data" / "postmaster.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One server for the session, in its own directory under /tmp (pytest's are root-only)."""
    directory = Path(tempfile.mkdtemp(prefix="avscan-pg-"))
    try:
        server = start_postgres(directory / "cluster")
        try:
            yield server
        finally:
            stop_postgres(server)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def fresh_database(server: PostgresServer) -> str:
    """The URL of a new empty database on ``server`` (appliances of one fleet share it)."""
    import uuid

    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server.url("postgres"), autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return server.url(name)


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def state_url(request: pytest.FixtureRequest) -> str:
    """Each test once per state backend: ``""`` (SQLite under the state directory, the embedded
    default) and the URL of a fresh database on the session's PostgreSQL (the fleet's state). The
    value goes to ``[state] url``; one server serves the session, a database per test keeps them apart."""
    if request.param == "sqlite":
        return ""
    return fresh_database(request.getfixturevalue("postgres"))


def state_section(url: str, host: str = "") -> str:
    """The ``[state]`` (and, on PostgreSQL, ``[fleet]``) TOML of a service config for ``url``:
    nothing for SQLite; on PostgreSQL, this appliance's ``host`` if given, and a short poll so a
    client following a scan sees it end promptly."""
    if not url:
        return ""
    fleet = f'host = "{host}"\n' if host else ""
    return f'\n[state]\nurl = "{url}"\n[fleet]\n{fleet}poll_seconds = 0.2\n'
