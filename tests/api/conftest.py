"""An in-process service on a free port with its state in tmp_path, and a client for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.inproc import ServerThread

from scanner.api.client import Client
from scanner.config import Config
from scanner.engine.cache import CacheSettings
from scanner.engine.settings import EngineSettings, MiB

UPLOAD_LIMIT = MiB


def make_config(state_dir: Path) -> Config:
    """One YARA thread, 64 KiB windows, no zero-block skipping and no result cache: a 1 GiB sparse
    image is 16k windows of real YARA work (seconds), and a cancel or shutdown lands between two of
    them. (With the cache, every all-zero window after the first is a hit.)"""
    return Config(
        listen="127.0.0.1:0",
        state_dir=state_dir,
        engine=EngineSettings(threads=1, chunk_size=64 * 1024, overlap=4096, skip_zero_blocks=False),
        cache=CacheSettings(enabled=False),
        max_upload_bytes=UPLOAD_LIMIT,
        shutdown_grace=0.5,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path / "state"))
    yield running
    running.stop()


@pytest.fixture
def client(server: ServerThread) -> Iterator[Client]:
    with Client(server.address, timeout=60) as c:
        yield c
