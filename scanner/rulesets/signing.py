"""Signed ruleset bundles: Ed25519 over the content digest and the publisher's bundle version.

A publisher signs the statement ``"avscan-ruleset-bundle/v1\\n<digest>\\n<version>\\n"`` (the
ruleset's content digest, ``sha256:<hex>``, and a bundle version the publisher increases with
every release) with a private key; the appliance trusts one or more public keys by name
(``[signatures] trusted_keys`` in config). With any key configured:

- a push without a signature, or whose signature does not verify with the named trusted key,
  is refused (PERMISSION_DENIED), and so is activating a stored ruleset that was never signed;
- a signed bundle whose version is lower than the active ruleset's is refused unless the caller
  says ``allow_rollback`` (a replayed old bundle cannot silently undo a newer one).

Key rotation: add the new public key under a new name next to the old one, restart, sign new
bundles with the new key, then remove the old key. Rulesets already stored keep the signature
they were pushed with; they remain usable while their key is trusted.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from scanner.errors import ConfigError, FailedPrecondition, InvalidArgument, PermissionDenied

STATEMENT = "avscan-ruleset-bundle/v1\n{digest}\n{version}\n"
MAX_KEY_ID = 64


@dataclass(frozen=True)
class BundleSignature:
    """Who signed a bundle (``key_id``), its ``bundle_version``, and the 64-byte signature."""

    key_id: str
    bundle_version: int
    signature: bytes

    def to_json(self) -> dict[str, object]:
        return {"key_id": self.key_id, "bundle_version": self.bundle_version, "signature": self.signature.hex()}

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> BundleSignature:
        return cls(str(doc["key_id"]), int(str(doc["bundle_version"])), bytes.fromhex(str(doc["signature"])))


def statement(digest: str, bundle_version: int) -> bytes:
    """The bytes a publisher signs for ruleset ``digest`` at ``bundle_version``."""
    return STATEMENT.format(digest=digest, version=bundle_version).encode()


def sign(key: Ed25519PrivateKey, key_id: str, digest: str, bundle_version: int) -> BundleSignature:
    if bundle_version < 1:
        raise InvalidArgument("bundle_version", "must be at least 1")
    return BundleSignature(key_id, bundle_version, key.sign(statement(digest, bundle_version)))


@dataclass(frozen=True)
class TrustedKeys:
    """Public keys by name. Empty: signatures are neither required nor checked."""

    keys: tuple[tuple[str, bytes], ...] = ()

    @property
    def required(self) -> bool:
        return bool(self.keys)

    def verify(self, digest: str, signed: BundleSignature | None) -> None:
        """Raise unless ``signed`` is a valid signature of ``digest`` by a trusted key (or no key
        is configured and nothing was signed)."""
        if not self.keys:
            if signed is not None:
                raise InvalidArgument("signature", "no trusted keys are configured to verify it")
            return
        if signed is None:
            raise PermissionDenied("unsigned ruleset refused: trusted signing keys are configured")
        public = dict(self.keys).get(signed.key_id)
        if public is None:
            raise PermissionDenied(f"signature by unknown key {signed.key_id!r} (trusted: {', '.join(self.names())})")
        try:
            signed_text = statement(digest, signed.bundle_version)
            Ed25519PublicKey.from_public_bytes(public).verify(signed.signature, signed_text)
        except InvalidSignature as e:
            raise PermissionDenied(
                f"signature by {signed.key_id!r} does not verify for {digest} at bundle version {signed.bundle_version}"
            ) from e

    def names(self) -> list[str]:
        return [name for name, _ in self.keys]


def check_not_older(new: BundleSignature | None, active: BundleSignature | None, allow_rollback: bool) -> None:
    """Refuse a signed bundle older than the active one unless ``allow_rollback``."""
    if new is None or active is None or allow_rollback or new.bundle_version >= active.bundle_version:
        return
    raise FailedPrecondition(
        f"bundle version {new.bundle_version} is older than the active ruleset's {active.bundle_version}; "
        "pass allow_rollback to accept it"
    )


def public_key_bytes(where: str, text: str) -> bytes:
    """A trusted key from config: base64 of the 32 raw bytes, or a path to a PEM public key.

    Base64 is tried first: a key's base64 may itself start with ``/`` (one key in 64 does), so a
    leading slash alone does not make a path."""
    raw = _raw_key(text)
    if raw is not None:
        return raw
    if text.startswith(("/", "./")) or text.endswith(".pem"):
        try:
            loaded = serialization.load_pem_public_key(Path(text).read_bytes())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{where}: cannot read PEM public key {text}: {e}") from e
        if not isinstance(loaded, Ed25519PublicKey):
            raise ConfigError(f"{where}: {text} is not an Ed25519 public key")
        return loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise ConfigError(f"{where}: not base64: {e}") from e
    if len(raw) != 32:
        raise ConfigError(f"{where}: an Ed25519 public key is 32 bytes, got {len(raw)}")
    return raw


def _raw_key(text: str) -> bytes | None:
    """The 32 bytes ``text`` is the base64 of, or None."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM (PKCS#8, unencrypted) file."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise InvalidArgument("key", f"{path}: cannot read an unencrypted PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidArgument("key", f"{path}: not an Ed25519 private key")
    return key


def new_key_pem() -> tuple[bytes, str]:
    """A new private key (PEM) and its public key as config takes it (base64 of 32 bytes)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return pem, base64.b64encode(raw).decode()
