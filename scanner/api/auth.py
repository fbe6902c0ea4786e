"""Who is calling, and what they may do.

Identities come from, in order: the client certificate (mutual TLS; the subject's CN is the
name, its OU values are the roles), a bearer token (``authorization: Bearer <token>``, matched
against sha256 digests in the config), or, with neither TLS nor tokens configured, the loopback
caller gets every role (the service then refuses to listen anywhere but loopback).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from scanner.config import ROLES, Config
from scanner.errors import PermissionDenied, Unauthenticated


@dataclass(frozen=True)
class Identity:
    name: str
    roles: frozenset[str]


LOCAL = Identity("local", ROLES)
current_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("identity", default=LOCAL)

READ = frozenset({"reader", "operator", "publisher"})
OPERATE = frozenset({"operator"})
PUBLISH = frozenset({"publisher"})

METHOD_ROLES: dict[str, frozenset[str]] = {
    "/scanner.v1.SignatureService/PushRuleset": PUBLISH,
    "/scanner.v1.SignatureService/ValidateRuleset": PUBLISH,
    "/scanner.v1.SignatureService/ActivateRuleset": PUBLISH,
    "/scanner.v1.SignatureService/RollbackRuleset": PUBLISH,
    "/scanner.v1.SignatureService/ListRulesets": READ,
    "/scanner.v1.SignatureService/GetRulesetRollout": READ,
    "/scanner.v1.ScanService/StartScan": OPERATE,
    "/scanner.v1.ScanService/CancelScan": OPERATE,
    "/scanner.v1.ScanService/ScanBytes": OPERATE,
    "/scanner.v1.ScanService/WatchScan": READ,
    "/scanner.v1.ScanService/GetScan": READ,
    "/scanner.v1.ScanService/ListScans": READ,
    "/scanner.v1.ScanService/ListFindings": READ,
    "/scanner.v1.VCenterService/ListVMs": READ,
    "/scanner.v1.VCenterService/ListJobs": READ,
    "/scanner.v1.VCenterService/ListActions": READ,
    "/scanner.v1.VCenterService/ScanVM": OPERATE,
    "/scanner.v1.VCenterService/Release": OPERATE,
}
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/",)
"""Methods anyone may call (health checks from load balancers and orchestrators)."""


class Authenticator:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._tokens = {t.sha256: t for t in config.tokens}

    def identify(self, auth_context: Mapping[str, Iterable[bytes]], metadata: Mapping[str, str]) -> Identity:
        """The caller's identity; raises Unauthenticated when none can be established."""
        pem = next(iter(auth_context.get("x509_pem_cert", ())), None)
        if pem:
            return _from_certificate(pem)
        header = metadata.get("authorization", "")
        if header:
            return self._from_token(header)
        if self.config.open_local:
            return LOCAL
        raise Unauthenticated("no client certificate or bearer token")

    def _from_token(self, header: str) -> Identity:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        for known, grant in self._tokens.items():
            if hmac.compare_digest(known, digest):
                return Identity(grant.name, grant.roles)
        raise Unauthenticated("unknown bearer token")


def authorize(method: str, identity: Identity) -> None:
    """Raise PermissionDenied unless ``identity`` holds a role the method needs."""
    needed = METHOD_ROLES.get(method, READ)
    if not identity.roles & needed:
        raise PermissionDenied(f"{identity.name} may not call {method} (needs one of {sorted(needed)})")


def _from_certificate(pem: bytes) -> Identity:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise Unauthenticated("client certificate could not be parsed") from e
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(cns[0].value) if cns else "unnamed-certificate"
    ous = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)}
    return Identity(name, frozenset(ous & ROLES))
