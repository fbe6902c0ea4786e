"""`[logging] format = "json"`: the service logs ECS JSON lines: scan start and end with the
verdict, the ruleset activated at first start, at INFO."""

from __future__ import annotations

import json

from support.samples import sample_dir
from support.service import Service

from scanner.api.client import files_target


def test_json_logs_have_one_ecs_line_per_scan_start_end_and_ruleset_change(tmp_path):
    config = tmp_path / "avscan.toml"
    config.write_text('[logging]\nformat = "json"\nlevel = "INFO"\n')
    target = sample_dir(tmp_path / "samples", infected=1, clean=1)
    service = Service(tmp_path / "state", config)
    try:
        with service.client() as client:
            scan_id = client.start_scan(files_target(str(target))).scan_id
            client.wait(scan_id, timeout=60)
        assert service.terminate() == 0
    finally:
        service.close()
    lines = [line for line in service.output().splitlines() if line.startswith("{")]
    docs = [json.loads(line) for line in lines]
    assert docs and all(d["ecs.version"] == "8.11.0" and "log.level" in d for d in docs)
    actions = [(d.get("event", {}).get("action"), d) for d in docs]
    started = [d for a, d in actions if a == "scan-started"]
    finished = [d for a, d in actions if a == "scan-finished"]
    assert [d["avscan"]["scan"]["id"] for d in started] == [scan_id]
    assert [(d["avscan"]["scan"]["id"], d["avscan"]["scan"]["verdict"]) for d in finished] == [(scan_id, "MALICIOUS")]
    assert any(a == "ruleset.activate" or (a or "").startswith("ruleset") for a, _ in actions), [a for a, _ in actions]
    assert all(d["log.level"] == "info" for d in started + finished)
