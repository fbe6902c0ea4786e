"""Hostile and careless inputs through the real service process and the real CLI.

FIFOs named as memory images never block anything (issue 15, item 2); a symbolic link given
explicitly is scanned as what it points to, and a pseudo-file whose size says 0 is read, so
neither is CLEAN with nothing scanned (item 4). The tests through the service run on both
state backends (SQLite; PostgreSQL as a fleet of one appliance); the CLI's one-shot scans keep
no state, so they run once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from support.samples import eicar, marker, marker_rule, sample_dir
from support.service import Service

from scanner.api.client import disk_target, files_target, memory_target
from scanner.v1 import verdict_pb2
from tests.support.postgres import state_section

REPO = Path(__file__).resolve().parents[2]
CONFIG = """
[jobs]
max_concurrent_scans = 2
shutdown_grace = 1.0
"""


@pytest.fixture
def service(tmp_path: Path, state_url: str) -> Iterator[Service]:
    config = tmp_path / "avscan.toml"
    config.write_text(CONFIG + state_section(state_url))
    running = Service(tmp_path / "state", config)
    yield running
    running.close()


def avscan(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanner", "--state-dir", str(tmp_path / "cli-state"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_fifos_as_memory_images_are_refused_and_the_service_stays_whole(tmp_path: Path, service: Service) -> None:
    fifos = []
    for i in range(8):
        fifos.append(tmp_path / f"ram{i}.fifo")
        os.mkfifo(fifos[-1])
    samples = sample_dir(tmp_path / "samples")
    with service.client() as client:
        for fifo in fifos:
            with pytest.raises(grpc.RpcError) as refused:
                client.start_scan(memory_target(str(fifo), "auto"))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"{fifo}: cannot open memory image: it is a FIFO, not a regular file" in refused.value.details()
        assert service.health() == health_pb2.HealthCheckResponse.SERVING
        assert client.list_rulesets()
        done = client.wait(client.start_scan(files_target(str(samples))).scan_id, timeout=60)
        assert done.verdict.kind == verdict_pb2.VERDICT_KIND_MALICIOUS
    assert service.terminate(timeout=30) == 0
    assert "Traceback" not in service.output()


def test_cli_refuses_a_fifo_memory_image_in_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "ram.fifo"
    os.mkfifo(fifo)
    result = avscan(tmp_path, "scan", "--memory", str(fifo))
    assert result.returncode == 2
    assert "it is a FIFO, not a regular file" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_symlinks_given_explicitly_are_scanned_as_what_they_point_to(tmp_path: Path, service: Service) -> None:
    infected = tmp_path / "real" / "dropper.com"
    infected.parent.mkdir()
    infected.write_bytes(eicar())
    (tmp_path / "file-link").symlink_to(infected)
    (tmp_path / "dir-link").symlink_to(infected.parent)
    with service.client() as client:
        for link in ("file-link", "dir-link"):
            done = client.wait(client.start_scan(files_target(str(tmp_path / link))).scan_id, timeout=60)
            assert done.verdict.kind == verdict_pb2.VERDICT_KIND_MALICIOUS, link
            assert done.verdict.coverage.units_scanned == 1
    for link in ("file-link", "dir-link"):
        result = avscan(tmp_path, "scan", str(tmp_path / link))
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"{infected}: EICAR_Test_File FOUND" in result.stdout


def test_a_dangling_symlink_given_explicitly_is_a_gap_never_clean(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    result = avscan(tmp_path, "scan", str(tmp_path / "dangling"))
    assert result.returncode == 2
    assert "Verdict: INCOMPLETE" in result.stdout


def test_a_proc_pseudo_file_of_size_zero_is_read_and_its_content_found(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "m.yar").write_bytes(marker_rule("environ"))
    env = {**os.environ, "PLANTED": marker("environ").decode()}
    holder = subprocess.Popen(["sleep", "600"], env=env)
    try:
        environ = Path(f"/proc/{holder.pid}/environ")
        assert environ.stat().st_size == 0, "the kernel reports pseudo-files as empty"
        result = avscan(tmp_path, "scan", "--rules", str(rules), str(environ))
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{environ}: Marker_environ FOUND" in result.stdout


CHATTY = (
    b'import "console"\n'
    b"rule chatty {\n  condition:\n"
    b'    for all i in (0..filesize-1): (console.log("byte ", i) and true)\n}\n'
)


def test_console_module_output_is_bounded(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "chatty.yar").write_bytes(CHATTY)
    sample = tmp_path / "data.bin"
    sample.write_bytes(b"a" * 100_000)
    result = avscan(tmp_path, "-v", "scan", "--rules", str(rules), str(sample))
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"{sample}: chatty FOUND" in result.stdout
    output = result.stdout + result.stderr
    assert output.count("byte ") <= 20, f"{output.count('byte ')} console lines"
    assert "99980 more console lines dropped" in output


def test_the_first_disk_scans_started_together_on_a_fresh_service_all_open(tmp_path: Path, service: Service) -> None:
    """qcow2 and VMDK scans racing to import their parsers: none fails (it used to, with
    ``_DeadlockError`` from the import system, in about half the runs of eight scans)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "dropper.com").write_bytes(eicar())
    raw = tmp_path / "fs.raw"
    subprocess.run(["mkfs.ext4", "-q", "-d", str(src), str(raw), "8M"], check=True, capture_output=True)
    images = []
    for fmt in ("qcow2", "vmdk"):
        images.append(tmp_path / f"disk.{fmt}")
        subprocess.run(["qemu-img", "convert", "-O", fmt, str(raw), str(images[-1])], check=True, capture_output=True)
    with service.client() as client, ThreadPoolExecutor(24) as pool:
        started = list(pool.map(lambda i: client.start_scan(disk_target(str(images[i % 2]))).scan_id, range(24)))
        finals = [client.wait(scan_id, timeout=120) for scan_id in started]
    assert [f.verdict.error for f in finals if f.verdict.error] == []
    assert {f.verdict.kind for f in finals} == {verdict_pb2.VERDICT_KIND_MALICIOUS}


def test_a_memory_image_holding_no_ram_is_an_error_never_clean(tmp_path: Path) -> None:
    empty = tmp_path / "guest.vmem"  # a flat VMware .vmem of 0 bytes: no address map at all
    empty.write_bytes(b"")
    result = avscan(tmp_path, "scan", "--memory", str(empty), "--format", "vmware")
    assert result.returncode == 2
    assert "no guest memory in it" in result.stdout + result.stderr
    assert "CLEAN" not in result.stdout
