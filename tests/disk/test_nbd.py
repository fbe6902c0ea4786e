"""The NBD stream (libnbd) against an export served by ``qemu-nbd`` from an image made by
``mkfs.ext4``: every read equals the image's bytes, a read past the end and a server that went
away are errors, never zeros."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.acquisition.disk.errors import TruncatedImage
from scanner.acquisition.disk.nbd import MAX_REQUEST, NbdDisk, NbdError

MiB = 1 << 20


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, bytes, subprocess.Popen[bytes]]]:
    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(12 * MiB + 4096))  # not a multiple of a request
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", str(image)], check=True)
    sock = tmp_path / "nbd.sock"
    server = subprocess.Popen(
        ["qemu-nbd", "--read-only", "--persistent", "--format=raw", f"--socket={sock}", "--export-name=d", str(image)],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():  # qemu-nbd creates its socket once it listens
            assert server.poll() is None and time.monotonic() < deadline, "qemu-nbd did not start"
            time.sleep(0.02)
        yield f"nbd+unix:///d?socket={sock}", image.read_bytes(), server
    finally:
        server.kill()
        server.wait()


def test_reads_equal_the_served_image_and_are_counted(served) -> None:
    uri, data, _ = served
    disk = NbdDisk(uri)
    try:
        assert disk.size == len(data)
        for offset, length in ((0, 1024), (1024, 4096 * 3 + 7), (MiB - 5, 2 * MAX_REQUEST + 11), (len(data) - 9, 9)):
            disk.seek(offset)
            assert disk.read(length) == data[offset : offset + length], hex(offset)
        assert disk.tell() == len(data)
        assert disk.bytes_read == 1024 + 4096 * 3 + 7 + 2 * MAX_REQUEST + 11 + 9
    finally:
        disk.close()


def test_a_read_past_the_end_is_an_error(served) -> None:
    uri, data, _ = served
    with NbdDisk(uri) as disk:
        disk.seek(len(data) - 10)
        with pytest.raises(TruncatedImage):
            disk.read(11)


def test_a_server_gone_mid_scan_is_an_error_not_zeros(served) -> None:
    uri, _, server = served
    with NbdDisk(uri) as disk:
        assert disk.read(512)
        server.kill()
        server.wait()
        with pytest.raises(NbdError):
            disk.read(4096)


def test_no_server_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(NbdError, match=r"nbd connect nbd\+unix:///d"):
        NbdDisk(f"nbd+unix:///d?socket={tmp_path}/none.sock")
