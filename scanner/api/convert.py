"""Internal dataclasses to and from the scanner.v1 wire messages. Nothing else builds protos."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from scanner.engine import Progress
from scanner.errors import Diagnostic, InvalidArgument
from scanner.fleet.rollout import Rollout
from scanner.rulesets.model import RulesetInfo
from scanner.rulesets.signing import BundleSignature
from scanner.state.db import ScanRecord
from scanner.targets import TargetSpec
from scanner.v1 import scans_pb2, signatures_pb2, verdict_pb2
from scanner.verdicts import Finding, Verdict

_OS_MODES: dict[int, str] = {
    scans_pb2.OS_AWARENESS_UNSPECIFIED: "auto",
    scans_pb2.OS_AWARENESS_AUTO: "auto",
    scans_pb2.OS_AWARENESS_PROCESSES: "processes",
    scans_pb2.OS_AWARENESS_PHYSICAL: "physical",
}
_OS_ENUMS = {
    "auto": scans_pb2.OS_AWARENESS_AUTO,
    "processes": scans_pb2.OS_AWARENESS_PROCESSES,
    "physical": scans_pb2.OS_AWARENESS_PHYSICAL,
}
SCAN_STATES = {
    "QUEUED": scans_pb2.SCAN_STATE_QUEUED,
    "RUNNING": scans_pb2.SCAN_STATE_RUNNING,
    "DONE": scans_pb2.SCAN_STATE_DONE,
    "CANCELLED": scans_pb2.SCAN_STATE_CANCELLED,
    "INTERRUPTED": scans_pb2.SCAN_STATE_INTERRUPTED,
}
SCAN_STATE_NAMES = {v: k for k, v in SCAN_STATES.items()}


def text(value: str) -> str:
    """A name for a proto string field. Names are bytes: those that are not valid UTF-8 (held as
    surrogate escapes inside) are sent with each such byte written ``\\xNN``, the documented escape
    of every string field that carries a path, unit or detail."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _texts(values: Mapping[str, Any]) -> dict[str, str]:
    return {text(str(k)): text(str(v)) for k, v in values.items()}


def timestamp(seconds: float | None) -> Timestamp | None:
    if not seconds:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def target_spec(target: scans_pb2.Target) -> TargetSpec:
    """The internal spec of a wire target; INVALID_ARGUMENT naming the field when wrong."""
    which = target.WhichOneof("kind")
    if which == "files":
        paths = list(target.files.paths)
        if not paths or not all(paths):
            raise InvalidArgument("target.files.paths", "give at least one non-empty path")
        for i, p in enumerate(paths):
            _path(p, f"target.files.paths[{i}]", exists=True)
        return TargetSpec("files", {"paths": paths})
    if which == "memory":
        if not target.memory.path:
            raise InvalidArgument("target.memory.path", "a path is required")
        _path(target.memory.path, "target.memory.path", exists=True)
        _path(target.memory.kernel_path, "target.memory.kernel_path", exists=True)
        m = target.memory
        params = {"path": m.path, "format": m.format or "auto", "os": _os_mode(m.os, "target.memory.os")}
        return TargetSpec("memory", {**params, "kernel": m.kernel_path} if m.kernel_path else params)
    if which == "guest":
        g = target.guest
        for name in ("ram_path", "qmp_socket", "kvmi_socket", "kernel_path"):
            _path(getattr(g, name), f"target.guest.{name}", exists=name != "kvmi_socket")
        consistency = "paused" if g.consistency == scans_pb2.CONSISTENCY_PAUSED else "running"
        guest_params: dict[str, Any] = {
            "ram": g.ram_path,
            "qmp": g.qmp_socket,
            "driver": g.driver or "file",
            "consistency": consistency,
            "max_pause_seconds": g.max_pause_seconds or 30.0,
            "domain": g.domain,
            "kvmi_socket": g.kvmi_socket,
            "os": _os_mode(g.os, "target.guest.os"),
            "kernel": g.kernel_path,
            "libvirt": g.libvirt_domain,
            "libvirt_uri": g.libvirt_uri,
        }
        return TargetSpec("guest", guest_params)
    if which == "disk":
        d = target.disk
        if not d.path and not ((d.qmp_socket or d.libvirt_domain) and d.device):
            raise InvalidArgument("target.disk.path", "give an image path, or qmp_socket or libvirt_domain and device")
        _path(d.path, "target.disk.path", exists=True)
        _path(d.qmp_socket, "target.disk.qmp_socket", exists=True)
        params = {"path": d.path, "format": d.format or "auto", "qmp": d.qmp_socket, "device": d.device}
        return TargetSpec("disk", {**params, "libvirt": d.libvirt_domain, "libvirt_uri": d.libvirt_uri})
    raise InvalidArgument("target", "set one target kind (files, memory, guest, disk)")


def _path(value: str, field: str, exists: bool) -> None:
    """An appliance path from a request: no NUL byte, absolute (never resolved against the
    service's working directory) and, with ``exists``, present now (not an INCOMPLETE later).
    An empty value is left to the caller's own "required" rule."""
    if not value:
        return
    if "\0" in value:
        raise InvalidArgument(field, "contains a NUL byte")
    if not os.path.isabs(value):
        raise InvalidArgument(field, f"must be an absolute path, got {text(value)!r}")
    if exists and not os.path.lexists(value):
        raise InvalidArgument(field, f"{text(value)}: no such file or directory")


def _os_mode(value: int, field: str) -> str:
    try:
        return _OS_MODES[value]
    except KeyError:
        raise InvalidArgument(field, f"unknown OS awareness mode {value}") from None


def target_message(spec: TargetSpec) -> scans_pb2.Target:
    params: Mapping[str, Any] = spec.params
    if spec.kind == "files":
        return scans_pb2.Target(files=scans_pb2.FilesTarget(paths=[text(p) for p in params.get("paths", [])]))
    if spec.kind == "memory":
        memory = scans_pb2.MemoryTarget(
            path=text(params["path"]),
            format=params.get("format", ""),
            os=_OS_ENUMS.get(str(params.get("os", "auto")), scans_pb2.OS_AWARENESS_AUTO),
            kernel_path=text(params.get("kernel", "")),
        )
        return scans_pb2.Target(memory=memory)
    if spec.kind == "guest":
        paused = params.get("consistency") == "paused"
        guest = scans_pb2.GuestTarget(
            ram_path=text(params.get("ram", "")),
            qmp_socket=text(params.get("qmp", "")),
            driver=params.get("driver", ""),
            max_pause_seconds=float(params.get("max_pause_seconds", 0)),
            consistency=scans_pb2.CONSISTENCY_PAUSED if paused else scans_pb2.CONSISTENCY_RUNNING,
            domain=params.get("domain", ""),
            kvmi_socket=params.get("kvmi_socket", ""),
            os=_OS_ENUMS.get(str(params.get("os", "auto")), scans_pb2.OS_AWARENESS_AUTO),
            kernel_path=text(params.get("kernel", "")),
            libvirt_domain=params.get("libvirt", ""),
            libvirt_uri=params.get("libvirt_uri", ""),
        )
        return scans_pb2.Target(guest=guest)
    if spec.kind == "disk":
        disk = scans_pb2.DiskTarget(
            path=text(params.get("path", "")),
            format=params.get("format", ""),
            qmp_socket=text(params.get("qmp", "")),
            device=params.get("device", ""),
            libvirt_domain=params.get("libvirt", ""),
            libvirt_uri=params.get("libvirt_uri", ""),
        )
        return scans_pb2.Target(disk=disk)
    return scans_pb2.Target()


def finding_message(f: Finding) -> verdict_pb2.Finding:
    meta = {}
    for key, value in f.meta.items():
        if isinstance(value, bool):
            meta[key] = verdict_pb2.MetaValue(bool_value=value)
        elif isinstance(value, int):
            meta[key] = verdict_pb2.MetaValue(int_value=value)
        else:
            meta[key] = verdict_pb2.MetaValue(string_value=text(str(value)))
    return verdict_pb2.Finding(
        rule=f.rule,
        namespace=f.namespace,
        tags=list(f.tags),
        meta=meta,
        unit=text(f.unit),
        unit_kind=f.unit_kind,
        offset=f.offset,
        address=f.address,
        strings=[
            verdict_pb2.StringMatch(
                identifier=s.identifier,
                offset=s.offset,
                address=s.address,
                length=s.length,
                data=s.data,
                physical_address=s.physical,
            )
            for s in f.strings
        ],
        strings_truncated=f.strings_truncated,
        context=_texts(f.context),
        severity=f.severity,
    )


def verdict_message(v: Verdict, with_findings: bool) -> verdict_pb2.Verdict:
    c = v.coverage
    coverage = verdict_pb2.Coverage(
        bytes_total=c.bytes_total,
        bytes_scanned=c.bytes_scanned,
        bytes_skipped=c.bytes_skipped,
        bytes_unreadable=c.bytes_unreadable,
        bytes_zero=c.bytes_zero,
        units_total=c.units_total,
        units_scanned=c.units_scanned,
        units_skipped=c.units_skipped,
        units_failed=c.units_failed,
        gaps=[
            verdict_pb2.Gap(
                kind=getattr(verdict_pb2, f"GAP_KIND_{g.kind.value}"),
                unit=text(g.unit),
                detail=text(g.detail),
                offset=g.offset,
                length=g.length,
            )
            for g in c.gaps
        ],
        gaps_truncated=c.gaps_truncated,
        complete=c.complete,
        cache_hits=c.cache_hits,
        cache_misses=c.cache_misses,
        accounting=dict(c.accounting),
    )
    return verdict_pb2.Verdict(
        kind=getattr(verdict_pb2, f"VERDICT_KIND_{v.kind.value}"),
        ruleset_digest=v.ruleset_digest,
        coverage=coverage,
        findings=[finding_message(f) for f in v.findings] if with_findings else [],
        error=text(v.error),
        reason=text(v.reason),
        started_at=timestamp(v.started_at),
        finished_at=timestamp(v.finished_at),
        details=_texts(v.details),
        findings_count=len(v.findings),
    )


def progress_message(p: Progress | None) -> scans_pb2.Progress | None:
    if p is None:
        return None
    return scans_pb2.Progress(
        bytes_done=p.bytes_done,
        bytes_total=p.bytes_total,
        units_done=p.units_done,
        units_total=p.units_total,
        findings=p.findings,
    )


def scan_message(r: ScanRecord, progress: Progress | None = None) -> scans_pb2.Scan:
    verdict = None
    if r.verdict is not None:
        verdict = verdict_message(r.verdict, with_findings=False)
        verdict.findings_count = r.findings_count
    return scans_pb2.Scan(
        scan_id=r.id,
        state=SCAN_STATES.get(r.state, scans_pb2.SCAN_STATE_UNSPECIFIED),
        target=target_message(r.target),
        options=scans_pb2.ScanOptions(
            unit_timeout_seconds=int(r.options.get("unit_timeout_seconds", 0)),
            ruleset_digest=str(r.options.get("ruleset_digest", "")),
            subject=scans_pb2.ScanSubject(
                name=str((r.options.get("subject") or {}).get("name", "")),
                id=str((r.options.get("subject") or {}).get("id", "")),
            ),
        ),
        requested_by=text(r.requested_by),
        request_id=r.request_id,
        created_at=timestamp(r.created_at),
        progress=progress_message(progress),
        verdict=verdict,
        attempts=r.attempts,
    )


def diagnostic_message(d: Diagnostic) -> signatures_pb2.Diagnostic:
    severity = (
        signatures_pb2.DIAGNOSTIC_SEVERITY_ERROR
        if d.severity == "error"
        else signatures_pb2.DIAGNOSTIC_SEVERITY_WARNING
    )
    return signatures_pb2.Diagnostic(
        severity=severity, file=d.file, line=d.line, message=d.message, slow_pattern=d.slow_pattern
    )


ROLLOUT_STATES = {
    "current": signatures_pb2.ROLLOUT_STATE_CURRENT,
    "lagging": signatures_pb2.ROLLOUT_STATE_LAGGING,
    "failed": signatures_pb2.ROLLOUT_STATE_FAILED,
    "unknown": signatures_pb2.ROLLOUT_STATE_UNKNOWN,
}


def rollout_message(state: Rollout) -> signatures_pb2.GetRulesetRolloutResponse:
    return signatures_pb2.GetRulesetRolloutResponse(
        active_digest=state.active,
        active_version=state.version,
        appliances=[
            signatures_pb2.ApplianceRuleset(
                appliance=a.appliance,
                host=a.host,
                running_digest=a.running,
                wanted_digest=a.wanted,
                state=ROLLOUT_STATES[a.state],
                error=a.error,
                updated_at=timestamp(a.updated_at),
            )
            for a in state.appliances
        ],
    )


def ruleset_message(info: RulesetInfo) -> signatures_pb2.Ruleset:
    return signatures_pb2.Ruleset(
        digest=info.digest,
        version=info.version,
        name=info.name,
        description=info.description,
        pushed_by=info.pushed_by,
        pushed_at=timestamp(info.pushed_at),
        rule_count=info.rule_count,
        file_count=info.file_count,
        size_bytes=info.size_bytes,
        warnings=[diagnostic_message(d) for d in info.warnings],
        active=info.active,
        signature=signature_message(info.signature),
    )


def signature_message(signed: BundleSignature | None) -> signatures_pb2.BundleSignature | None:
    if signed is None:
        return None
    return signatures_pb2.BundleSignature(
        key_id=signed.key_id, bundle_version=signed.bundle_version, signature=signed.signature
    )
