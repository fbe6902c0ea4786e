"""Access control with real certificates (mutual TLS, OU = role) and bearer tokens."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.certs import Authority, Issued
from support.inproc import ServerThread
from support.samples import default_files, sample_dir

from scanner.api.client import Client, ClientTLS, files_target
from scanner.config import load_config


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued | Path]:
    root = tmp_path_factory.mktemp("pki")
    ca = Authority(root / "ca", "test-ca")
    foreign = Authority(root / "foreign", "foreign-ca")
    return {
        "ca": ca.cert,
        "server": ca.issue("server", "avscan.test", server=True),
        "publisher": ca.issue("publisher", "alice", ("publisher",)),
        "operator": ca.issue("operator", "bob", ("operator",)),
        "reader": ca.issue("reader", "carol", ("reader",)),
        "foreign": foreign.issue("intruder", "mallory", ("publisher", "operator")),
    }


@pytest.fixture
def tls_server(tmp_path: Path, pki: dict) -> Iterator[ServerThread]:
    server = pki["server"]
    config = write_config(
        tmp_path / "avscan.toml",
        f"""
[server]
listen = "127.0.0.1:0"
[server.tls]
cert = "{server.cert}"
key = "{server.key}"
client_ca = "{pki["ca"]}"
""",
    )
    running = ServerThread(load_config(config, state_dir=tmp_path / "state"))
    yield running
    running.stop()


def tls_client(server: ServerThread, pki: dict, who: str | None) -> Client:
    pair = pki[who] if who else None
    tls = ClientTLS(ca=pki["ca"], cert=pair.cert if pair else None, key=pair.key if pair else None)
    return Client(server.address, tls=tls, timeout=10)


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


@pytest.mark.parametrize("who", [None, "foreign"])
def test_without_a_certificate_from_our_ca_the_handshake_fails(tls_server, pki, who) -> None:
    # The server requires a client certificate signed by client_ca: the TLS handshake fails,
    # which gRPC reports as UNAVAILABLE (no RPC ever reaches the service).
    with tls_client(tls_server, pki, who) as client:
        assert code_of(client.list_rulesets) == grpc.StatusCode.UNAVAILABLE


def test_reader_may_read_but_not_scan(tls_server, pki, tmp_path: Path) -> None:
    with tls_client(tls_server, pki, "operator") as operator:
        scan = operator.start_scan(files_target(str(sample_dir(tmp_path / "s"))))
        assert scan.requested_by == "bob"
    with tls_client(tls_server, pki, "reader") as reader:
        assert [r.active for r in reader.list_rulesets()] == [True]
        assert reader.get_scan(scan.scan_id).scan_id == scan.scan_id
        assert code_of(lambda: reader.start_scan(files_target(str(tmp_path)))) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: reader.cancel(scan.scan_id)) == grpc.StatusCode.PERMISSION_DENIED


def test_operator_may_scan_but_not_publish(tls_server, pki, tmp_path: Path) -> None:
    with tls_client(tls_server, pki, "operator") as operator:
        assert operator.scan_bytes(b"hello").verdict.ruleset_digest
        with pytest.raises(grpc.RpcError) as caught:
            operator.push_ruleset(default_files(), "sneaky")
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "PushRuleset" in caught.value.details()
        assert code_of(operator.rollback) == grpc.StatusCode.PERMISSION_DENIED


def test_publisher_may_push_and_is_recorded_as_the_pusher(tls_server, pki) -> None:
    with tls_client(tls_server, pki, "publisher") as publisher:
        files = [*default_files(), ("extra/x.yar", b'rule X { strings: $a = "xyzzy-42" condition: $a }')]
        pushed = publisher.push_ruleset(files, "team").ruleset
        assert (pushed.version, pushed.pushed_by) == (2, "alice")
        assert code_of(lambda: publisher.scan_bytes(b"x")) == grpc.StatusCode.PERMISSION_DENIED


TOKENS = {"soc-token-1": ("soc", ["reader"]), "ops-token-2": ("ops", ["operator", "reader"])}


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[ServerThread]:
    grants = "".join(
        f'[[auth.tokens]]\nname = "{name}"\nsha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        f"roles = {roles!r}\n".replace("'", '"')
        for token, (name, roles) in TOKENS.items()
    )
    config = write_config(tmp_path / "avscan.toml", f'[server]\nlisten = "127.0.0.1:0"\n{grants}')
    running = ServerThread(load_config(config, state_dir=tmp_path / "state"))
    yield running
    running.stop()


@pytest.mark.parametrize("token", ["", "wrong-token"])
def test_missing_or_wrong_token_is_unauthenticated(token_server, token) -> None:
    with Client(token_server.address, token=token, timeout=10) as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.list_rulesets()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_grants_its_roles_only(token_server, tmp_path: Path) -> None:
    with Client(token_server.address, token="ops-token-2", timeout=10) as ops:
        scan = ops.start_scan(files_target(str(sample_dir(tmp_path / "s"))))
        assert scan.requested_by == "ops"
        assert code_of(lambda: ops.push_ruleset(default_files(), "x")) == grpc.StatusCode.PERMISSION_DENIED
    with Client(token_server.address, token="soc-token-1", timeout=10) as soc:
        assert soc.get_scan(scan.scan_id).requested_by == "ops"
        assert code_of(lambda: soc.start_scan(files_target(str(tmp_path)))) == grpc.StatusCode.PERMISSION_DENIED


def test_listening_beyond_loopback_without_tls_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "avscan.toml", '[server]\nlisten = "0.0.0.0:0"\n')

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scanner",
            "--config",
            str(config),
            "--state-dir",
            str(tmp_path / "state"),
            "serve",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "server.listen" in result.stderr and "0.0.0.0:0" in result.stderr
    assert not (tmp_path / "state").exists(), "refused before touching any state"
