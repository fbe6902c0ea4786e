"""A small synchronous client for the scanner.v1 API (CLI, demo, tests, SOC scripts)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc

from scanner.v1 import scans_pb2, scans_pb2_grpc, signatures_pb2, signatures_pb2_grpc

CHUNK = 256 * 1024


@dataclass(frozen=True)
class ClientTLS:
    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str = ""


class Client:
    def __init__(self, address: str, token: str = "", tls: ClientTLS | None = None, timeout: float = 120.0) -> None:
        if tls is None:
            self.channel = grpc.insecure_channel(address)
        else:
            creds = grpc.ssl_channel_credentials(
                tls.ca.read_bytes(),
                tls.key.read_bytes() if tls.key else None,
                tls.cert.read_bytes() if tls.cert else None,
            )
            options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
            self.channel = grpc.secure_channel(address, creds, options=options)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.timeout = timeout
        self.scans = scans_pb2_grpc.ScanServiceStub(self.channel)
        self.signatures = signatures_pb2_grpc.SignatureServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # signatures

    def push_ruleset(
        self,
        files: Iterable[tuple[str, bytes]],
        name: str,
        description: str = "",
        signature: signatures_pb2.BundleSignature | None = None,
        allow_rollback: bool = False,
        force_slow_rules: bool = False,
    ) -> signatures_pb2.PushRulesetResponse:
        header = signatures_pb2.RulesetHeader(
            name=name,
            description=description,
            signature=signature,
            allow_rollback=allow_rollback,
            force_slow_rules=force_slow_rules,
        )

        def messages() -> Iterator[signatures_pb2.PushRulesetRequest]:
            yield signatures_pb2.PushRulesetRequest(header=header)
            for chunk in _chunks(files):
                yield signatures_pb2.PushRulesetRequest(chunk=chunk)

        return self.signatures.PushRuleset(messages(), metadata=self.metadata, timeout=self.timeout)

    def validate_ruleset(self, files: Iterable[tuple[str, bytes]]) -> signatures_pb2.ValidateRulesetResponse:
        requests = (signatures_pb2.ValidateRulesetRequest(chunk=c) for c in _chunks(files))
        return self.signatures.ValidateRuleset(requests, metadata=self.metadata, timeout=self.timeout)

    def activate(self, digest: str = "", version: int = 0, allow_rollback: bool = False) -> signatures_pb2.Ruleset:
        request = signatures_pb2.ActivateRulesetRequest(digest=digest, version=version, allow_rollback=allow_rollback)
        return self.signatures.ActivateRuleset(request, metadata=self.metadata, timeout=self.timeout).ruleset

    def rollback(self) -> signatures_pb2.Ruleset:
        request = signatures_pb2.RollbackRulesetRequest()
        return self.signatures.RollbackRuleset(request, metadata=self.metadata, timeout=self.timeout).ruleset

    def list_rulesets(self) -> list[signatures_pb2.Ruleset]:
        out, token = [], ""
        while True:
            request = signatures_pb2.ListRulesetsRequest(page_token=token)
            page = self.signatures.ListRulesets(request, metadata=self.metadata, timeout=self.timeout)
            out += list(page.rulesets)
            token = page.next_page_token
            if not token:
                return out

    def ruleset_rollout(self) -> signatures_pb2.GetRulesetRolloutResponse:
        """Which ruleset each appliance of the fleet runs, against the fleet's active one."""
        request = signatures_pb2.GetRulesetRolloutRequest()
        return self.signatures.GetRulesetRollout(request, metadata=self.metadata, timeout=self.timeout)

    # scans

    def start_scan(
        self,
        target: scans_pb2.Target,
        request_id: str = "",
        unit_timeout: int = 0,
        ruleset_digest: str = "",
        subject: tuple[str, str] = ("", ""),
    ) -> scans_pb2.Scan:
        """``subject``: (name, id) of the machine the target belongs to, for the scan's events."""
        options = scans_pb2.ScanOptions(
            unit_timeout_seconds=unit_timeout,
            ruleset_digest=ruleset_digest,
            subject=scans_pb2.ScanSubject(name=subject[0], id=subject[1]),
        )
        request = scans_pb2.StartScanRequest(target=target, request_id=request_id, options=options)
        return self.scans.StartScan(request, metadata=self.metadata, timeout=self.timeout).scan

    def watch(self, scan_id: str, timeout: float | None = None) -> Iterator[scans_pb2.WatchScanResponse]:
        request = scans_pb2.WatchScanRequest(scan_id=scan_id)
        return iter(self.scans.WatchScan(request, metadata=self.metadata, timeout=timeout))

    def wait(self, scan_id: str, timeout: float | None = None) -> scans_pb2.Scan:
        """Watch until the scan is final; returns it."""
        for event in self.watch(scan_id, timeout):
            if event.HasField("done"):
                return event.done
        return self.get_scan(scan_id)

    def get_scan(self, scan_id: str) -> scans_pb2.Scan:
        request = scans_pb2.GetScanRequest(scan_id=scan_id)
        return self.scans.GetScan(request, metadata=self.metadata, timeout=self.timeout).scan

    def list_scans(self, page_size: int = 50, page_token: str = "", state: int = 0) -> scans_pb2.ListScansResponse:
        request = scans_pb2.ListScansRequest(page_size=page_size, page_token=page_token, state=cast(Any, state))
        return self.scans.ListScans(request, metadata=self.metadata, timeout=self.timeout)

    def findings(self, scan_id: str) -> list[scans_pb2.ListFindingsResponse]:
        pages, token = [], ""
        while True:
            request = scans_pb2.ListFindingsRequest(scan_id=scan_id, page_token=token)
            page = self.scans.ListFindings(request, metadata=self.metadata, timeout=self.timeout)
            pages.append(page)
            token = page.next_page_token
            if not token:
                return pages

    def cancel(self, scan_id: str) -> scans_pb2.Scan:
        request = scans_pb2.CancelScanRequest(scan_id=scan_id)
        return self.scans.CancelScan(request, metadata=self.metadata, timeout=self.timeout).scan

    def scan_bytes(self, data: bytes, name: str = "buffer", ruleset_digest: str = "") -> scans_pb2.ScanBytesResponse:
        def messages() -> Iterator[scans_pb2.ScanBytesRequest]:
            yield scans_pb2.ScanBytesRequest(header=scans_pb2.ScanBytesHeader(name=name, ruleset_digest=ruleset_digest))
            for i in range(0, len(data), CHUNK):
                yield scans_pb2.ScanBytesRequest(chunk=data[i : i + CHUNK])

        return self.scans.ScanBytes(messages(), metadata=self.metadata, timeout=self.timeout)


def _chunks(files: Iterable[tuple[str, bytes]]) -> Iterator[signatures_pb2.RuleFileChunk]:
    for path, data in files:
        if not data:
            yield signatures_pb2.RuleFileChunk(path=path, data=b"")
        for i in range(0, len(data), CHUNK):
            yield signatures_pb2.RuleFileChunk(path=path, data=data[i : i + CHUNK])


def files_target(*paths: str) -> scans_pb2.Target:
    return scans_pb2.Target(files=scans_pb2.FilesTarget(paths=list(paths)))


def memory_target(path: str, fmt: str = "raw") -> scans_pb2.Target:
    return scans_pb2.Target(memory=scans_pb2.MemoryTarget(path=path, format=fmt))


def guest_target(ram: str = "", qmp: str = "", paused: bool = False, max_pause: float = 0.0) -> scans_pb2.Target:
    consistency = scans_pb2.CONSISTENCY_PAUSED if paused else scans_pb2.CONSISTENCY_RUNNING
    guest = scans_pb2.GuestTarget(ram_path=ram, qmp_socket=qmp, consistency=consistency, max_pause_seconds=max_pause)
    return scans_pb2.Target(guest=guest)


def disk_target(path: str = "", fmt: str = "auto", qmp: str = "", device: str = "") -> scans_pb2.Target:
    return scans_pb2.Target(disk=scans_pb2.DiskTarget(path=path, format=fmt, qmp_socket=qmp, device=device))
