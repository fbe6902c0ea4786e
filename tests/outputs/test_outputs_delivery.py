"""Events reach real receivers as valid ECS through outages: rsyslog restarted mid-stream, a webhook
answering 503, the service itself restarted with a backlog. At-least-once: every document arrives,
duplicates only as redeliveries of the same ``event.id``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from api.conftest import make_config
from support.inproc import ServerThread
from support.samples import sample_dir

from outputs.ecs_reference import problems
from outputs.receivers import Rsyslog, Webhook, wait_for
from scanner.api.client import Client, files_target


@pytest.fixture
def rsyslog(tmp_path):
    receiver = Rsyslog(tmp_path / "rsyslog")
    yield receiver
    receiver.stop()


@pytest.fixture
def webhook():
    receiver = Webhook()
    yield receiver
    receiver.close()


def service(state: Path, rsyslog: Rsyslog, webhook: Webhook, jsonl: Path) -> ServerThread:
    address = f"127.0.0.1:{rsyslog.port}"
    sinks = (
        {"kind": "syslog", "name": "siem", "address": address, "transport": "tcp"},
        {"kind": "cef", "name": "arcsight", "address": address, "transport": "tcp"},
        {"kind": "webhook", "name": "soar", "url": webhook.url},
        {"kind": "jsonl", "name": "file", "path": str(jsonl), "max_bytes": 20_000, "keep": 50},
    )
    return ServerThread(replace(make_config(state), event_sinks=sinks))


def scan(server: ServerThread, target: Path) -> str:
    with Client(server.address, timeout=60) as client:
        scan_id = client.start_scan(files_target(str(target))).scan_id
        client.wait(scan_id, timeout=60)
    return scan_id


def backlog(server: ServerThread) -> dict[str, int]:
    return {s.sink: s.backlog for s in server.app.events.states()}


def drained(server: ServerThread) -> bool:
    return all(n == 0 for n in backlog(server).values())


def failed(server: ServerThread, sink: str) -> bool:
    return any(s.sink == sink and s.attempts > 0 for s in server.app.events.states())


def test_findings_survive_receiver_and_service_restarts(tmp_path, rsyslog, webhook):
    state, jsonl = tmp_path / "state", tmp_path / "events" / "avscan.jsonl"
    infected = sample_dir(tmp_path / "infected", infected=2, clean=1)
    clean = sample_dir(tmp_path / "clean", infected=0, clean=2)
    server = service(state, rsyslog, webhook, jsonl)
    scans = []
    try:
        scans.append(scan(server, infected))
        wait_for("first scan delivered", lambda: drained(server))
        rsyslog.stop()  # the SIEM goes away mid-stream
        webhook.down = True
        scans += [scan(server, infected), scan(server, clean)]
        wait_for("syslog sink to see the outage", lambda: failed(server, "siem"))
        wait_for("webhook sink to see the outage", lambda: webhook.refused > 0)
        assert backlog(server)["siem"] == 4  # 2 findings + end, clean end: queued, not lost
        rsyslog.start()
        webhook.down = False
        wait_for("backlog drained after the outage", lambda: drained(server))
        rsyslog.stop()
        scans.append(scan(server, infected))
    finally:
        server.stop()  # the service stops with the last scan's events still queued for syslog
    rsyslog.start()
    server = service(state, rsyslog, webhook, jsonl)
    try:
        wait_for("backlog from before the restart drained", lambda: drained(server))
    finally:
        server.stop()

    expected = 3 * 3 + 1  # three infected scans (2 findings + end each), one clean scan (its end)
    syslog_docs = [json.loads(m) for m in rsyslog.messages() if not m.startswith("CEF:")]
    cef_lines = [m for m in rsyslog.messages() if m.startswith("CEF:")]
    hook_docs = [e["data"] for e in webhook.events]
    file_docs = [json.loads(line) for f in sorted(jsonl.parent.iterdir()) for line in f.read_text().splitlines()]
    for docs in (syslog_docs, hook_docs, file_docs):
        assert {d["event"]["id"] for d in docs} == {d["event"]["id"] for d in file_docs}
        assert len({d["event"]["id"] for d in docs}) == expected
        for doc in docs:
            assert problems(doc) == [], doc
    assert len({_ext(line, "externalId") for line in cef_lines}) == expected
    ends = [d for d in file_docs if d["event"]["action"] == "scan-finished"]
    assert sorted({d["avscan"]["scan"]["id"] for d in ends}) == sorted(scans)
    assert len(list(jsonl.parent.iterdir())) > 1  # the JSON-lines file rotated
    assert all(e["specversion"] == "1.0" and e["source"].startswith("/avscan/") for e in webhook.events)
    assert "application/cloudevents+json" in next(iter(webhook.content_types))
    assert any(h.split()[1:3] == ["avscan", "avscan.finding"] for h in rsyslog.headers())


def _ext(cef: str, key: str) -> str:
    return cef.split(f" {key}=", 1)[1].split(" ", 1)[0]


def test_syslog_over_tls_and_udp_reach_rsyslog(tmp_path):
    from support.certs import Authority

    ca = Authority(tmp_path / "pki", "siem-ca")
    server = ca.issue("rsyslog", "localhost", server=True)
    secure = Rsyslog(tmp_path / "tls", tls=(ca.cert, server.cert, server.key))
    plain = Rsyslog(tmp_path / "plain")
    sinks = (
        {
            "kind": "syslog",
            "name": "tls",
            "address": f"127.0.0.1:{secure.port}",
            "transport": "tls",
            "ca": str(ca.cert),
            "server_name": "localhost",
        },
        {"kind": "cef", "name": "udp", "address": f"127.0.0.1:{plain.port}", "transport": "udp"},
    )
    service = ServerThread(replace(make_config(tmp_path / "state"), event_sinks=sinks))
    try:
        scan(service, sample_dir(tmp_path / "infected", infected=1, clean=0))
        wait_for("both sinks drained", lambda: drained(service))
        wait_for("rsyslog wrote the TLS messages", lambda: len(secure.messages()) >= 2)
        wait_for("rsyslog wrote the UDP messages", lambda: len(plain.messages()) >= 2)
    finally:
        service.stop()
        secure.stop()
        plain.stop()
    docs = [json.loads(m) for m in secure.messages()]
    assert sorted(d["event"]["action"] for d in docs) == ["malware-detected", "scan-finished"]
    assert len(docs) == 2  # delivered once: the close handshake counted as delivery
    for doc in docs:
        assert problems(doc) == [], doc
    cef = plain.messages()
    assert all(line.startswith("CEF:0|avscan|avscan|") for line in cef)
    assert any("|EICAR_Test_File|" in line and " fname=eicar0.com " in line for line in cef), cef


def test_events_queued_during_an_outage_survive_kill_9(tmp_path, webhook):
    from support.service import Service

    config = tmp_path / "avscan.toml"
    config.write_text(f'[[events.sinks]]\nkind = "webhook"\nname = "soar"\nurl = "{webhook.url}"\n')
    infected = sample_dir(tmp_path / "infected", infected=1, clean=0)
    webhook.down = True
    service = Service(tmp_path / "state", config)
    try:
        with service.client() as client:
            scan_id = client.start_scan(files_target(str(infected))).scan_id
            client.wait(scan_id, timeout=60)
        wait_for("the webhook to refuse the events", lambda: webhook.refused > 0)
        service.kill()  # SIGKILL: no shutdown code runs
    finally:
        service.close()
    assert webhook.events == []
    webhook.down = False
    service = Service(tmp_path / "state", config)
    try:
        wait_for("the events queued before the crash", lambda: len({e["id"] for e in webhook.events}) == 2)
    finally:
        service.close()
    actions = sorted(e["data"]["event"]["action"] for e in webhook.events)
    assert set(actions) == {"malware-detected", "scan-finished"}
    assert {e["data"]["avscan"]["scan"]["id"] for e in webhook.events} == {scan_id}


def test_webhook_over_https_verifies_the_receiver(tmp_path):
    from support.certs import Authority

    ca = Authority(tmp_path / "pki", "soar-ca")
    issued = ca.issue("soar", "localhost", server=True)
    receiver = Webhook(tls=(issued.cert, issued.key))
    stranger = Authority(tmp_path / "other", "other-ca")
    sinks = (
        {"kind": "webhook", "name": "soar", "url": receiver.url, "ca": str(ca.cert), "authorization": "Bearer t0k"},
        {"kind": "webhook", "name": "wrongca", "url": receiver.url, "ca": str(stranger.cert)},
    )
    service = ServerThread(replace(make_config(tmp_path / "state"), event_sinks=sinks))
    try:
        scan(service, sample_dir(tmp_path / "infected", infected=1, clean=0))
        wait_for("the verified sink drained", lambda: backlog(service)["soar"] == 0)
        wait_for("the unverifiable sink to fail", lambda: failed(service, "wrongca"))
        assert backlog(service)["wrongca"] == 2  # refused to talk to a receiver it cannot verify: kept
    finally:
        service.stop()
        receiver.close()
    assert sorted(e["type"] for e in receiver.events) == ["avscan.finding", "avscan.scan"]
    assert receiver.authorizations == {"Bearer t0k"}
