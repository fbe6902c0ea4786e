"""`/metrics`: a real scrape after real scans, checked by Prometheus' own `promtool check metrics`."""

from __future__ import annotations

import subprocess
import urllib.request
from dataclasses import replace

from api.conftest import make_config
from prometheus_client.parser import text_string_to_metric_families
from support.inproc import ServerThread
from support.samples import sample_dir

from scanner.api.client import Client, files_target


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return answer.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_scrape_after_scans_and_promtool_accepts_it(tmp_path):
    sink = {"kind": "jsonl", "name": "file", "path": str(tmp_path / "events.jsonl")}
    config = replace(make_config(tmp_path / "state"), metrics_listen="127.0.0.1:0", event_sinks=(sink,))
    server = ServerThread(config)
    try:
        infected = sample_dir(tmp_path / "infected", infected=1, clean=1)
        clean = sample_dir(tmp_path / "clean", infected=0, clean=1)
        with Client(server.address, timeout=60) as client:
            for target in (infected, clean):
                client.wait(client.start_scan(files_target(str(target))).scan_id, timeout=60)
        text = scrape(server.app.metrics_port)
    finally:
        server.stop()
    got = samples(text)
    assert got[("avscan_scans", (("state", "DONE"),))] == 2
    assert got[("avscan_scans_finished_total", (("state", "DONE"), ("verdict", "MALICIOUS")))] == 1
    assert got[("avscan_scans_finished_total", (("state", "DONE"), ("verdict", "CLEAN")))] == 1
    assert got[("avscan_scanned_bytes_total", (("kind", "files"),))] > 0
    assert got[("avscan_scan_duration_seconds_count", (("kind", "files"),))] == 2
    assert got[("avscan_ruleset_version", ())] >= 1
    assert got[("avscan_queue_depth", ())] == 0
    assert ("avscan_event_backlog", (("sink", "file"),)) in got
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == "", check.stdout + check.stderr
