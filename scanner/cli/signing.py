"""``avscan rules keygen`` and ``avscan rules sign``: a publisher's side of signed bundles.

A signature file is JSON: ``digest``, ``key_id``, ``bundle_version``, ``signature`` (hex); it
goes with the rules to ``avscan rules push --signature FILE`` (see ``scanner.rulesets.signing``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from scanner.errors import ScannerError
from scanner.rulesets.model import RulesetFile, check_file_set, ruleset_digest
from scanner.rulesets.signing import MAX_KEY_ID, BundleSignature, load_private_key, new_key_pem, sign
from scanner.v1 import signatures_pb2


@click.command("keygen")
@click.argument("private_key", type=click.Path(path_type=Path, dir_okay=False))
def rules_keygen(private_key: Path) -> None:
    """Write a new Ed25519 signing key to PRIVATE_KEY (mode 0600); print the public key for
    ``[signatures] trusted_keys`` on the appliances."""
    pem, public = new_key_pem()
    fd = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    click.echo(public)


@click.command("sign")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option("--signing-key", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True)
@click.option("--key-id", required=True, help="The key's name in the appliances' trusted_keys.")
@click.option("--bundle-version", type=click.IntRange(min=1), required=True, help="Higher than any earlier bundle.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="Default: PATH.sig.json")
def rules_sign(path: Path, signing_key: Path, key_id: str, bundle_version: int, out: Path | None) -> None:
    """Sign the YARA sources at PATH (a file or directory, as ``rules push`` sends them)."""
    from scanner.cli.remote import read_rule_files

    if len(key_id) > MAX_KEY_ID:
        raise click.BadParameter(f"at most {MAX_KEY_ID} characters", param_hint="--key-id")
    try:
        files = check_file_set(RulesetFile(p, d) for p, d in read_rule_files(path))
        digest = ruleset_digest(files)
        signed = sign(load_private_key(signing_key), key_id, digest, bundle_version)
    except ScannerError as e:
        raise click.ClickException(e.message) from e
    target = out or path.with_name(path.name + ".sig.json")
    target.write_text(json.dumps({"digest": digest, **signed.to_json()}, indent=1) + "\n")
    click.echo(f"{digest} bundle version {bundle_version} signed by {key_id}: {target}")


def read_signature(path: Path) -> signatures_pb2.BundleSignature:
    """The signature message from a file written by ``rules sign``."""
    try:
        signed = BundleSignature.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise click.BadParameter(f"{path}: not a signature file from 'avscan rules sign': {e}") from e
    return signatures_pb2.BundleSignature(
        key_id=signed.key_id, bundle_version=signed.bundle_version, signature=signed.signature
    )
