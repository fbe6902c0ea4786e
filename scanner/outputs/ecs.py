"""Scan results as Elastic Common Schema 8.11 documents: the one builder the CLI and the service use.

Contract:
- Three document shapes: a **finding** (``event.kind: alert``, one per finding), a **scan end**
  (``event.kind: event``, one per scan whatever its verdict, with coverage and accounting) and a
  **quarantine action** (one per vCenter action applied or given up on).
- Every field outside ``avscan.*`` is an ECS 8.11 field with its ECS type (arrays where ECS
  normalizes to arrays); avscan-specific facts live under ``avscan.*``.
- ``host.*`` names what was scanned when it is a VM (``cloud.*`` too for vCenter VMs); otherwise
  the appliance itself. ``observer.*`` is always the appliance.
- ``event.id`` is stable for one (scan, finding) or (action): a redelivered document carries the
  same id, so a SIEM can drop duplicates of at-least-once delivery.
- Names that are not valid UTF-8 (held as surrogate escapes) are written with ``\\xNN`` escapes.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scanner.state.codec import coverage_to_dict
from scanner.verdicts import Finding, Verdict, VerdictKind

ECS_VERSION = "8.11.0"
_NAMESPACE = uuid.UUID("4f6a3b52-8d0c-4c53-9a55-6176736361e0")
_SEVERITY_CONFIDENCE = ((75, "High"), (50, "Medium"), (0, "Low"))
QUARANTINE_STEPS = frozenset({"tag", "disconnect", "snapshot", "suspend"})
RELEASE_STEPS = frozenset({"untag", "restore_network", "resume"})


@dataclass(frozen=True)
class Subject:
    """What a scan looked at, as ECS names it: a VM (``host.*``/``cloud.*``) or this appliance."""

    name: str = ""
    id: str = ""
    hypervisor_host: str = ""
    provider: str = ""  # "vsphere" for vCenter VMs, "" otherwise

    @classmethod
    def of_scan(cls, options: Mapping[str, Any], target: Mapping[str, Any]) -> Subject:
        """The VM a scan names: its options' ``subject`` (vCenter jobs), else a live guest's
        libvirt domain; empty (the appliance itself) otherwise."""
        raw = options.get("subject") or {}
        if raw:
            return cls(
                str(raw.get("name", "")), str(raw.get("id", "")), str(raw.get("host", "")), str(raw.get("provider", ""))
            )
        return cls(name=str(target.get("domain") or ""))


@dataclass(frozen=True)
class ScanFacts:
    """What the documents of one scan share: its id, target, ruleset and subject."""

    scan_id: str
    target_kind: str
    target: str = ""
    ruleset_version: int = 0
    subject: Subject = field(default_factory=Subject)
    state: str = "DONE"
    requested_by: str = ""


def finding_document(f: Finding, verdict: Verdict, facts: ScanFacts, index: int = 0) -> dict[str, Any]:
    """One ECS alert for finding number ``index`` of a scan."""
    doc = _base(verdict.finished_at or verdict.started_at, facts, f"{facts.scan_id}/finding/{index}")
    doc["event"].update(
        kind="alert",
        category=["malware", "intrusion_detection"],
        type=["info"],
        action="malware-detected",
        dataset="avscan.finding",
        severity=f.severity,
        risk_score=float(f.severity),
        outcome="success",
    )
    doc["message"] = _text(f"{f.rule} found in {f.unit_kind} {f.unit}" + _where(f, facts))
    doc["rule"] = _rule(f)
    doc["tags"] = list(f.tags)
    doc["threat"] = _threat(f)
    doc.update(_unit_fields(f))
    doc["avscan"] = {**_scan_fields(verdict, facts), "finding": _finding_fields(f)}
    return doc


def scan_end_document(verdict: Verdict, facts: ScanFacts) -> dict[str, Any]:
    """One ECS event for the end of a scan (every verdict, cancelled scans too)."""
    doc = _base(verdict.finished_at or verdict.started_at, facts, f"{facts.scan_id}/end")
    found = verdict.kind in (VerdictKind.MALICIOUS, VerdictKind.SUSPICIOUS)
    doc["event"].update(
        kind="event",
        category=["malware"],
        type=["info"],  # the only type ECS expects with malware; event.action says it is the end
        action="scan-finished",
        dataset="avscan.scan",
        outcome="failure" if verdict.kind is VerdictKind.ERROR else "success",
        severity=max((f.severity for f in verdict.findings), default=0),
    )
    if verdict.started_at:
        doc["event"]["start"] = _time(verdict.started_at)
        if verdict.finished_at:
            doc["event"]["end"] = _time(verdict.finished_at)
            doc["event"]["duration"] = int((verdict.finished_at - verdict.started_at) * 1e9)
    if verdict.reason:
        doc["event"]["reason"] = _text(verdict.reason)
    what = f"{len(verdict.findings)} finding(s)" if found else (verdict.reason or "nothing found")
    doc["message"] = _text(
        f"scan {facts.scan_id} of {facts.target_kind}{_where(None, facts)}: {verdict.kind.value} ({what})"
    )
    doc["avscan"] = _scan_fields(verdict, facts)
    doc["avscan"]["scan"]["findings_count"] = len(verdict.findings)
    doc["avscan"]["scan"]["coverage"] = coverage_fields(verdict)
    return doc


def action_document(
    action_id: str, kind: str, outcome: str, vm_name: str, vm_uuid: str, when: float, detail: str = ""
) -> dict[str, Any]:
    """One ECS event for a quarantine step on a VM, or a step of its release (``outcome`` success
    or failure); ``event.action`` is ``quarantine-<step>`` or ``release-<step>``."""
    subject = Subject(vm_name, vm_uuid, provider="vsphere")
    doc = _base(when, ScanFacts("", "vcenter", subject=subject), f"action/{action_id}/{outcome}")
    doc["event"].update(
        kind="event",
        category=["host"],
        type=["change"],  # a failed step too: event.outcome says it failed
        action=f"{'release' if kind.split(':', 1)[0] in RELEASE_STEPS else 'quarantine'}-{kind.split(':', 1)[0]}",
        dataset="avscan.action",
        outcome=outcome,
    )
    doc["message"] = _text(f"{doc['event']['action']} on VM {vm_name}: {outcome}" + (f" ({detail})" if detail else ""))
    doc["avscan"] = {"action": _drop_empty({"id": action_id, "kind": kind, "detail": _text(detail)})}
    return doc


def scan_documents(verdict: Verdict, facts: ScanFacts) -> list[dict[str, Any]]:
    """Every document of one finished scan: its findings, then its end."""
    docs = [finding_document(f, verdict, facts, i) for i, f in enumerate(verdict.findings)]
    return [*docs, scan_end_document(verdict, facts)]


def coverage_fields(verdict: Verdict) -> dict[str, Any]:
    """The stored coverage (``state.codec``), with ``complete`` and gaps as named fields."""
    c = verdict.coverage
    fields = coverage_to_dict(c)
    fields["gaps"] = [
        {"kind": g.kind.value, "unit": _text(g.unit), "detail": _text(g.detail), "offset": g.offset, "length": g.length}
        for g in c.gaps
    ]
    return {"complete": c.complete, **fields}


def to_json(doc: Mapping[str, Any]) -> str:
    """One line of JSON (ASCII-safe: any escaped byte stays an escape)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _base(when: float, facts: ScanFacts, key: str) -> dict[str, Any]:
    appliance = _hostname()
    doc: dict[str, Any] = {
        "@timestamp": _time(when),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "id": str(uuid.uuid5(_NAMESPACE, key)) if key else str(uuid.uuid4()),
            "module": "avscan",
            "provider": "avscan",
            "created": _time(dt.datetime.now(dt.UTC).timestamp()),
        },
        "observer": {
            "vendor": "avscan",
            "product": "avscan",
            "type": "scanner",
            "version": _version(),
            "hostname": appliance,
        },
    }
    s = facts.subject
    if s.name or s.id:
        doc["host"] = _drop_empty({"name": _text(s.name or s.id), "id": s.id, "hostname": _text(s.name)})
        if s.provider:
            doc["cloud"] = _drop_empty(
                {"provider": s.provider, "instance": _drop_empty({"id": s.id, "name": _text(s.name)})}
            )
        if s.hypervisor_host:
            doc["observer"]["name"] = _text(s.hypervisor_host)
    else:
        doc["host"] = {"name": appliance, "hostname": appliance}
    if facts.requested_by:
        doc["user"] = {"name": _text(facts.requested_by)}
    return doc


def _scan_fields(verdict: Verdict, facts: ScanFacts) -> dict[str, Any]:
    return {
        "scan": _drop_empty(
            {
                "id": facts.scan_id,
                "state": facts.state,
                "verdict": verdict.kind.value,
                "reason": _text(verdict.reason),
                "target_kind": facts.target_kind,
                "target": _text(facts.target),
                "ruleset": _drop_empty({"digest": verdict.ruleset_digest, "version": facts.ruleset_version or None}),
                "complete": verdict.coverage.complete,
            }
        )
    }


def _rule(f: Finding) -> dict[str, Any]:
    """ECS ``rule.*`` from the YARA rule and its metadata (``version`` is the rule's own)."""
    meta = f.meta
    return _drop_empty(
        {
            "name": f.rule,
            "ruleset": f.namespace,
            "id": str(meta.get("id", "")),
            "uuid": str(meta.get("uuid", "")),
            "description": str(meta.get("description", "")),
            "author": [str(meta["author"])] if meta.get("author") else [],
            "reference": str(meta.get("reference", "")),
            "category": str(meta.get("category", "")),
            "license": str(meta.get("license", "")),
            "version": str(meta.get("version", "")),  # the ruleset's version is avscan.scan.ruleset.version
        }
    )


def _finding_fields(f: Finding) -> dict[str, Any]:
    """``avscan.finding``: where in the unit, the matched strings (hex), the owning processes."""
    strings = [
        {
            "identifier": s.identifier,
            "offset": s.offset,
            "address": s.address,
            "length": s.length,
            "data_hex": s.data.hex(),
        }
        for s in f.strings
    ]
    owners = {k: _text(f.context[k]) for k in ("pid", "process", "region", "virtual_address") if k in f.context}
    return _drop_empty(
        {
            "unit": _text(f.unit),
            "unit_kind": f.unit_kind,
            "offset": f.offset,
            "address": f.address,
            "strings": strings,
            "strings_truncated": f.strings_truncated,
            "owners": owners,
            # why a memory finding names no process or only some, and the kernel part it is in
            **{k: _text(f.context[k]) for k in ("attribution", "kernel_region") if k in f.context},
        }
    )


def _threat(f: Finding) -> dict[str, Any]:
    confidence = next(name for floor, name in _SEVERITY_CONFIDENCE if f.severity >= floor)
    owned = bool(f.context.get("pid"))
    indicator: dict[str, Any] = {
        "type": "file" if f.unit_kind == "file" else "process" if owned else "artifact",
        "provider": "avscan",
        "confidence": confidence,
        "description": _text(str(f.meta.get("description", "")) or f.rule),
    }
    if f.unit_kind == "file":
        indicator["file"] = _file_fields(f)
    threat: dict[str, Any] = {"indicator": _drop_empty(indicator)}
    family = f.meta.get("malware_family") or f.meta.get("family") or f.meta.get("malware")
    if family and not isinstance(family, bool):
        threat["software"] = {"name": str(family), "type": "Malware"}
    technique = f.meta.get("mitre_attack") or f.meta.get("technique")
    if isinstance(technique, str) and technique:
        threat["framework"] = "MITRE ATT&CK"
        threat["technique"] = {"id": [technique]}
    return threat


def _unit_fields(f: Finding) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if f.unit_kind == "file":
        out["file"] = _file_fields(f)
    pids = [p for p in f.context.get("pid", "").split(",") if p.isdigit()]
    if pids:  # the (first) owning process; avscan.finding.owners lists every owner
        out["process"] = _drop_empty({"pid": int(pids[0]), "name": _text(f.context.get("process", "").split(",")[0])})
    return out


def _file_fields(f: Finding) -> dict[str, Any]:
    path = _text(f.context.get("path") or f.unit)  # a disk file: its path inside the guest
    size = f.context.get("size", "")
    return _drop_empty(
        {
            "path": path,
            "name": os.path.basename(path),
            "directory": os.path.dirname(path),
            "size": int(size) if size.isdigit() else None,
            "hash": {"sha256": f.context["sha256"]} if "sha256" in f.context else {},
        }
    )


def _where(f: Finding | None, facts: ScanFacts) -> str:
    name = facts.subject.name or facts.subject.id
    return f" on VM {name}" if name else ""


def _text(value: str) -> str:
    """Text for a document: bytes that were not UTF-8 (surrogate escapes) become ``\\xNN``."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _time(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@functools.cache
def _hostname() -> str:
    return socket.gethostname()


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("avscan")
    except PackageNotFoundError:
        return "0+unknown"


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in ("", {}, None, [])}
