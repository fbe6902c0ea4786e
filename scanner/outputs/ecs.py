"""Findings as Elastic Common Schema documents, one JSON object per line (SIEM ingestion)."""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

from scanner.verdicts import Finding, Verdict


def finding_document(f: Finding, verdict: Verdict, ruleset_version: int = 0) -> dict[str, Any]:
    meta = f.meta
    doc: dict[str, Any] = {
        "@timestamp": dt.datetime.fromtimestamp(verdict.finished_at or verdict.started_at, dt.UTC)
        .isoformat()
        .replace("+00:00", "Z"),
        "event": {
            "kind": "alert",
            "category": ["malware", "intrusion_detection"],
            "type": ["info"],
            "module": "avscan",
            "dataset": "avscan.finding",
            "severity": f.severity,
            "outcome": "success",
        },
        "observer": {"vendor": "avscan", "product": "avscan", "type": "scanner"},
        "rule": _drop_empty(
            {
                "name": f.rule,
                "ruleset": f.namespace,
                "id": str(meta.get("id", "")),
                "description": str(meta.get("description", "")),
                "author": str(meta.get("author", "")),
                "reference": str(meta.get("reference", "")),
                "version": str(ruleset_version) if ruleset_version else "",
            }
        ),
        "tags": list(f.tags),
        "avscan": {
            "verdict": verdict.kind.value,
            "ruleset_digest": verdict.ruleset_digest,
            "unit": f.unit,
            "unit_kind": f.unit_kind,
            "offset": f.offset,
            "address": f.address,
            "strings": [
                {
                    "identifier": s.identifier,
                    "offset": s.offset,
                    "address": s.address,
                    "length": s.length,
                    "data_hex": s.data.hex(),
                }
                for s in f.strings
            ],
            "strings_truncated": f.strings_truncated,
            "coverage_complete": verdict.coverage.complete,
            **({"accounting": dict(verdict.coverage.accounting)} if verdict.coverage.accounting else {}),
            # why a memory finding names no process or only some, and the kernel part it is in
            **{k: f.context[k] for k in ("attribution", "kernel_region") if k in f.context},
        },
    }
    if f.unit_kind == "file":
        doc["file"] = _drop_empty(
            {
                "path": f.unit,
                "name": os.path.basename(f.unit),
                "hash": {"sha256": f.context["sha256"]} if "sha256" in f.context else {},
            }
        )
    if f.unit_kind == "memory":
        doc["avscan"]["memory"] = {"physical_address": f.address}
    pids = [p for p in f.context.get("pid", "").split(",") if p.isdigit()]
    if pids:  # ECS process.*: the (first) owning process; avscan.owners lists every owner
        doc["process"] = {"pid": int(pids[0]), "name": f.context.get("process", "").split(",")[0]}
        doc["avscan"]["owners"] = {
            k: f.context[k] for k in ("pid", "process", "region", "virtual_address") if k in f.context
        }
    return doc


def finding_json(f: Finding, verdict: Verdict, ruleset_version: int = 0) -> str:
    return json.dumps(finding_document(f, verdict, ruleset_version), sort_keys=True)


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in ("", {}, None)}
