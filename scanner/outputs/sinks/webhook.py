"""A CloudEvents 1.0 webhook: each document POSTed in structured JSON mode (SOAR, Event Grid, Knative).

``type`` is the document's ``event.dataset`` (``avscan.finding``, ``avscan.scan``,
``avscan.action``), ``id`` its ``event.id`` (stable across redeliveries: CloudEvents receivers
dedup on source + id), ``subject`` the VM or host, ``data`` the ECS document. A 2xx answer is
delivery; anything else (or no answer) leaves the batch queued.
"""

from __future__ import annotations

import datetime as dt
import http.client
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from scanner.errors import ConfigError, DeliveryError
from scanner.outputs.sinks.base import Params, Sink


class WebhookSink(Sink):
    kind = "webhook"
    batch_size = 20

    def __init__(self, name: str, raw: Mapping[str, Any]) -> None:
        super().__init__(name)
        p = Params(name, raw, {"url", "timeout", "authorization", "ca"})
        self.url = urllib.parse.urlsplit(p.get("url", str))
        if self.url.scheme not in ("http", "https") or not self.url.hostname:
            raise ConfigError(f"{p.where}.url: must be an http:// or https:// URL")
        self.timeout = float(p.get("timeout", (int, float), 10.0))
        self.authorization = p.get("authorization", str, "")
        self.ca = p.get("ca", str, "")

    def deliver(self, docs: Sequence[Mapping[str, Any]]) -> None:
        conn = self._connect()
        try:
            for doc in docs:
                headers, body = _structured(doc)
                if self.authorization:
                    headers["Authorization"] = self.authorization
                conn.request("POST", self.url.path or "/", body=body, headers=headers)
                answer = conn.getresponse()
                answer.read()
                if not 200 <= answer.status < 300:
                    raise DeliveryError(f"webhook {self.url.geturl()}: HTTP {answer.status} {answer.reason}")
        except (OSError, http.client.HTTPException) as e:
            raise DeliveryError(f"webhook {self.url.geturl()}: {e}") from e
        finally:
            conn.close()

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self.url.hostname or "", self.url.port
        if self.url.scheme == "https":
            import ssl

            context = ssl.create_default_context(cafile=self.ca or None)
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=context)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)


def _structured(doc: Mapping[str, Any]) -> tuple[dict[str, str], bytes]:
    from cloudevents.core.bindings.http import to_structured_event
    from cloudevents.core.v1.event import CloudEvent

    event = doc.get("event", {})
    attributes: dict[str, Any] = {
        "type": str(event.get("dataset", "avscan.event")),
        "source": f"/avscan/{doc.get('observer', {}).get('hostname', 'unknown')}",
        "id": str(event.get("id")),
        "time": dt.datetime.fromisoformat(str(doc["@timestamp"]).replace("Z", "+00:00")),
        "datacontenttype": "application/json",
    }
    subject = doc.get("host", {}).get("name")
    if subject:
        attributes["subject"] = str(subject)
    message = to_structured_event(CloudEvent(attributes, dict(doc)))
    return dict(message.headers), message.body
