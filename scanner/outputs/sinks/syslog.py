"""Syslog (RFC 5424) over UDP, TCP (RFC 6587 octet counting) or TLS (RFC 5425), ECS JSON as MSG.

Delivery on TCP and TLS is confirmed the only way plain syslog allows: each batch goes on a fresh
connection that is half-closed after the last frame, and counts as delivered only when the
receiver closed its side too (it read everything). UDP cannot confirm anything: a batch sent is
a batch delivered (use TCP or TLS where losing an event matters).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

from scanner.errors import ConfigError, DeliveryError
from scanner.outputs.ecs import to_json
from scanner.outputs.sinks.base import Params, Sink

UDP_MAX = 65_000
FACILITIES = {
    "kern": 0,
    "user": 1,
    "daemon": 3,
    "auth": 4,
    "authpriv": 10,
    "security": 13,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}


class SyslogSink(Sink):
    kind = "syslog"
    app_name = "avscan"

    def __init__(self, name: str, raw: Mapping[str, Any]) -> None:
        super().__init__(name)
        p = Params(name, raw, {"address", "transport", "facility", "ca", "cert", "key", "server_name", "timeout"})
        host, _, port = str(p.get("address", str)).rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{p.where}.address: must be host:port")
        self.host, self.port = host.strip("[]"), int(port)
        self.transport = p.get("transport", str, "tcp")
        if self.transport not in ("udp", "tcp", "tls"):
            raise ConfigError(f"{p.where}.transport: must be udp, tcp or tls")
        facility = p.get("facility", str, "local0")
        if facility not in FACILITIES:
            raise ConfigError(f"{p.where}.facility: one of {', '.join(FACILITIES)}")
        self.facility = FACILITIES[facility]
        self.timeout = float(p.get("timeout", (int, float), 10.0))
        self.tls: ssl.SSLContext | None = None
        if self.transport == "tls":
            self.tls = ssl.create_default_context(cafile=p.get("ca", str, "") or None)
            if "cert" in raw:
                self.tls.load_cert_chain(p.get("cert", str), p.get("key", str, "") or None)
            self.server_name = p.get("server_name", str, self.host)

    def message(self, doc: Mapping[str, Any]) -> str:
        """The MSG part for one document (ECS JSON here; CEF in the subclass)."""
        return to_json(doc)

    def frame(self, doc: Mapping[str, Any]) -> bytes:
        event = doc.get("event", {})
        pri = self.facility * 8 + _severity(event)
        host = str(doc.get("observer", {}).get("hostname", "-"))[:255] or "-"
        msgid = str(event.get("dataset", "-"))[:32]
        sd = f'[meta@32473 eventId="{event.get("id", "")}"]'  # 32473: the documentation enterprise number
        return (
            f"<{pri}>1 {doc.get('@timestamp', '-')} {host} {self.app_name} - {msgid} {sd} {self.message(doc)}".encode()
        )

    def deliver(self, docs: Sequence[Mapping[str, Any]]) -> None:
        frames = [self.frame(d) for d in docs]
        if self.transport == "udp":  # a datagram holds 64 KiB: drop the matched strings, never the event
            frames = [
                f if len(f) <= UDP_MAX else self.frame(_without_strings(d)) for f, d in zip(frames, docs, strict=True)
            ]
        try:
            if self.transport == "udp":
                self._udp(frames)
            else:
                self._stream(frames)
        except (OSError, ssl.SSLError) as e:
            raise DeliveryError(f"syslog {self.transport}://{self.host}:{self.port}: {e}") from e

    def _udp(self, frames: list[bytes]) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            for f in frames:
                s.sendto(f[:UDP_MAX], (self.host, self.port))

    def _stream(self, frames: list[bytes]) -> None:
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            conn: socket.socket = raw
            if self.tls is not None:
                conn = self.tls.wrap_socket(raw, server_hostname=self.server_name)
            conn.sendall(b"".join(b"%d %s" % (len(f), f) for f in frames))
            if isinstance(conn, ssl.SSLSocket):
                try:
                    conn = conn.unwrap()  # our close_notify, then the receiver's
                except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
                    return  # it closed on our close_notify: it read every record before it
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):  # the receiver read to our end and closed: it has every frame
                pass
        finally:
            raw.close()


def _without_strings(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` without the matched strings of its finding (marked ``strings_dropped``)."""
    avscan = dict(doc.get("avscan", {}))
    finding = {k: v for k, v in avscan.get("finding", {}).items() if k != "strings"}
    avscan["finding"] = {**finding, "strings_dropped": True}
    return {**doc, "avscan": avscan}


def _severity(event: Mapping[str, Any]) -> int:
    """Syslog severity: 2 critical for a high-severity finding, 4 warning for a lower one,
    3 error for a failed scan or action, 5 notice for any other finding-bearing event, 6 info."""
    if event.get("kind") == "alert":
        return 2 if int(event.get("severity", 0)) >= 75 else 4
    if event.get("outcome") == "failure":
        return 3
    return 5 if int(event.get("severity", 0)) else 6
