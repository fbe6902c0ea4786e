"""ArcSight CEF over syslog: the same transports as ``syslog``, MSG is a ``CEF:0|...`` line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scanner.outputs.sinks.syslog import SyslogSink


class CefSink(SyslogSink):
    kind = "cef"

    def message(self, doc: Mapping[str, Any]) -> str:
        event, scan = doc.get("event", {}), doc.get("avscan", {}).get("scan", {})
        rule, file, process = doc.get("rule", {}), doc.get("file", {}), doc.get("process", {})
        signature = rule.get("name") or event.get("action", "event")
        name = doc.get("message", signature)
        ext = {
            "rt": _epoch_ms(doc.get("@timestamp", "")),
            "externalId": event.get("id"),
            "cat": event.get("dataset"),
            "act": event.get("action"),
            "outcome": event.get("outcome"),
            "dvchost": doc.get("observer", {}).get("hostname"),
            "dhost": doc.get("host", {}).get("name"),
            "filePath": file.get("path"),
            "fname": file.get("name"),
            "fsize": file.get("size"),
            "fileHash": file.get("hash", {}).get("sha256"),
            "dpid": process.get("pid"),
            "dproc": process.get("name"),
            "cs1Label": "verdict" if scan.get("verdict") else None,
            "cs1": scan.get("verdict"),
            "cs2Label": "scanId" if scan.get("id") else None,
            "cs2": scan.get("id"),
            "cs3Label": "ruleset" if rule.get("ruleset") else None,
            "cs3": rule.get("ruleset"),
            "msg": doc.get("message"),
        }
        body = " ".join(f"{k}={_ext(v)}" for k, v in ext.items() if v not in (None, ""))
        severity = min(10, int(event.get("severity", 0)) // 10)
        header = ["avscan", "avscan", _version(doc), signature, name, str(severity)]
        return "CEF:0|" + "|".join(_head(h) for h in header) + "|" + body


def _head(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _ext(value: Any) -> str:
    text = str(value).replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def _version(doc: Mapping[str, Any]) -> str:
    return str(doc.get("observer", {}).get("version", "0"))


def _epoch_ms(stamp: str) -> int | None:
    import datetime as dt

    try:
        return int(dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None
