"""Signed bundles and slow rules, through the real API and the real CLI (issue 15, item 5/6).

Keys are made by ``avscan rules keygen`` and bundles signed by ``avscan rules sign``; the
signature is checked by ``cryptography``'s Ed25519 (an implementation independent of ours) in
the test that forges one byte.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.inproc import ServerThread
from support.samples import marker_rule

from scanner.api.client import Client
from scanner.cli.signing import read_signature
from scanner.config import Config
from scanner.rulesets.signing import TrustedKeys, public_key_bytes

REPO = Path(__file__).resolve().parents[2]
# An unbounded hex jump (every 00 starts a verify to the end) and nested loops over the data.
JUMPY = b"rule jumpy {\n  strings:\n    $a = { 00 [-] 01 }\n  condition:\n    $a\n}\n"
LOOPS = (
    b"rule loops {\n  condition:\n    for any i in (0..filesize-1): (for any j in (0..99): (uint8(i+j) == 238))\n}\n"
)


def avscan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanner", *args], capture_output=True, text=True, cwd=REPO, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Two publisher keys made by the CLI: name -> (private key file, public key text)."""
    root = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("old", "new"):
        made = avscan("rules", "keygen", str(root / f"{name}.pem"))
        assert made.returncode == 0, made.stderr
        out[name] = (root / f"{name}.pem", made.stdout.strip())
    return out


def bundle(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "m.yar").write_bytes(marker_rule(name))
    return root


def signed(rules: Path, keys: dict[str, tuple[Path, str]], key: str, version: int) -> Path:
    out = rules.with_name(f"{rules.name}-{key}-{version}.sig.json")
    made = avscan(
        "rules", "sign", str(rules), "--signing-key", str(keys[key][0]),
        "--key-id", key, "--bundle-version", str(version), "--out", str(out),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return out


def files(rules: Path) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(rules.glob("*.yar"))]


@pytest.fixture
def client(tmp_path: Path, keys: dict[str, tuple[Path, str]]) -> Iterator[Client]:
    trusted = TrustedKeys(tuple((k, public_key_bytes(k, keys[k][1])) for k in ("old", "new")))
    server = ServerThread(Config(listen="127.0.0.1:0", state_dir=tmp_path / "state", trusted_keys=trusted))
    try:
        with Client(server.address, timeout=300) as c:
            yield c
    finally:
        server.stop()


def refused(call: object, code: grpc.StatusCode, text: str) -> None:
    with pytest.raises(grpc.RpcError) as e:
        call()  # type: ignore[operator]
    assert e.value.code() == code, e.value.details()
    assert text in e.value.details()


def test_with_trusted_keys_only_validly_signed_bundles_are_stored(
    tmp_path: Path, keys: dict[str, tuple[Path, str]], client: Client
) -> None:
    rules = bundle(tmp_path / "one", "one")
    sig = signed(rules, keys, "new", 1)
    refused(lambda: client.push_ruleset(files(rules), "unsigned"), grpc.StatusCode.PERMISSION_DENIED, "unsigned")

    forged = json.loads(sig.read_text())
    forged["signature"] = ("00" if forged["signature"][:2] != "00" else "01") + forged["signature"][2:]
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    refused(
        lambda: client.push_ruleset(files(rules), "forged", signature=read_signature(tmp_path / "forged.json")),
        grpc.StatusCode.PERMISSION_DENIED,
        "does not verify",
    )
    other = bundle(tmp_path / "two", "two")  # a valid signature of other content
    refused(
        lambda: client.push_ruleset(files(other), "swapped", signature=read_signature(sig)),
        grpc.StatusCode.PERMISSION_DENIED,
        "does not verify",
    )
    stored = client.push_ruleset(files(rules), "signed", signature=read_signature(sig)).ruleset
    assert (stored.signature.key_id, stored.signature.bundle_version) == ("new", 1)
    assert client.activate(digest=stored.digest).active


def test_an_older_signed_bundle_needs_an_explicit_rollback(
    tmp_path: Path, keys: dict[str, tuple[Path, str]], client: Client
) -> None:
    v1, v2 = bundle(tmp_path / "v1", "v1"), bundle(tmp_path / "v2", "v2")
    first = client.push_ruleset(files(v1), "v1", signature=read_signature(signed(v1, keys, "old", 1))).ruleset
    second = client.push_ruleset(files(v2), "v2", signature=read_signature(signed(v2, keys, "new", 2))).ruleset
    client.activate(digest=second.digest)

    refused(lambda: client.activate(digest=first.digest), grpc.StatusCode.FAILED_PRECONDITION, "older than")
    v0 = bundle(tmp_path / "v0", "v0")
    replayed = read_signature(signed(v0, keys, "old", 1))
    refused(
        lambda: client.push_ruleset(files(v0), "v0", signature=replayed),
        grpc.StatusCode.FAILED_PRECONDITION,
        "older than",
    )
    assert client.activate(digest=first.digest, allow_rollback=True).digest == first.digest


def test_rotation_a_bundle_signed_by_a_key_no_longer_trusted_is_refused(
    tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    """After rotation (only "new" trusted), a bundle signed with "old" is refused."""
    trusted = TrustedKeys((("new", public_key_bytes("new", keys["new"][1])),))
    server = ServerThread(Config(listen="127.0.0.1:0", state_dir=tmp_path / "state", trusted_keys=trusted))
    rules = bundle(tmp_path / "r", "r")
    try:
        with Client(server.address, timeout=300) as client:
            old = read_signature(signed(rules, keys, "old", 5))
            refused(
                lambda: client.push_ruleset(files(rules), "r", signature=old),
                grpc.StatusCode.PERMISSION_DENIED,
                "unknown key 'old'",
            )
            assert client.push_ruleset(
                files(rules), "r", signature=read_signature(signed(rules, keys, "new", 5))
            ).ruleset.digest
    finally:
        server.stop()


def test_a_rule_too_slow_for_the_reference_buffer_is_refused_unless_forced(tmp_path: Path) -> None:
    server = ServerThread(Config(listen="127.0.0.1:0", state_dir=tmp_path / "state", rule_probe_seconds=1.0))
    slow = [("perf/jumpy.yar", JUMPY), ("perf/loops.yar", LOOPS), ("fine.yar", marker_rule("fine"))]
    try:
        with Client(server.address, timeout=300) as client:
            with pytest.raises(grpc.RpcError) as e:
                client.push_ruleset(slow, "slow")
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # Which slow file crosses the budget first depends on the machine's load: any of the
            # two may be named, the fast one never.
            details = e.value.details() or ""
            assert "error: scanning the 16 MiB reference buffer took over the 1 s budget" in details
            assert "perf/" in details and "fine.yar" not in details
            checked = client.validate_ruleset(slow)
            assert not checked.ok
            flagged = {d.file for d in checked.diagnostics if d.slow_pattern}
            assert flagged and flagged <= {"perf/jumpy.yar", "perf/loops.yar"}
            forced = client.push_ruleset(slow, "slow", force_slow_rules=True)
            assert any(d.file.startswith("perf/") and d.slow_pattern for d in forced.diagnostics)
    finally:
        server.stop()


def test_trusted_keys_and_job_limits_come_from_config(tmp_path: Path, keys: dict[str, tuple[Path, str]]) -> None:
    from scanner.config import load_config
    from scanner.errors import ConfigError

    path = tmp_path / "avscan.toml"
    path.write_text(
        "[jobs]\ncancel_grace = 2.5\nmax_attempts = 3\n"
        f'[signatures]\nslow_rule_seconds = 2\ntrusted_keys = [{{ id = "new", public_key = "{keys["new"][1]}" }}]\n'
    )
    config = load_config(path)
    assert config.trusted_keys.names() == ["new"] and config.rule_probe_seconds == 2.0
    assert (config.jobs.cancel_grace, config.jobs.max_attempts) == (2.5, 3)
    path.write_text('[signatures]\ntrusted_keys = [{ id = "x", public_key = "c2hvcnQ=" }]\n')
    with pytest.raises(
        ConfigError, match=r"signatures.trusted_keys\[0\].public_key: an Ed25519 public key is 32 bytes"
    ):
        load_config(path)


def test_a_base64_key_starting_with_a_slash_is_a_key_not_a_path() -> None:
    """One Ed25519 key in 64 has base64 starting with '/': it was once read as a PEM path."""
    import base64

    raw = bytes([0xFD]) + bytes(range(31))
    text = base64.b64encode(raw).decode()
    assert text.startswith("/")
    assert public_key_bytes("signatures.trusted_keys[0].public_key", text) == raw
