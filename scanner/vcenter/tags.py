"""vSphere tags through the vSphere Automation REST API (``/rest/com/vmware/cis``).

Tags exist only there, not in SOAP. vcsim serves this subset (session, categories, tags,
associations). A vCenter without the endpoint (404 on the session call) raises
:class:`TaggingUnavailable`: callers record that and rely on the custom attribute instead.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from scanner.vcenter.connection import Connection, VCenterError

BASE = "/rest/com/vmware/cis"


class TaggingUnavailable(VCenterError):
    def __init__(self, why: str) -> None:
        super().__init__(f"vSphere tagging API unavailable: {why}", transient=False)


class Tagging:
    """A REST session; every method is blocking (call it through ``Connection.call``)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._session = ""

    def _request(self, method: str, path: str, body: Any = None, retry: bool = True) -> Any:
        if not self._session:
            self._login()
        http = self.conn.http(self.conn.settings.call_timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"vmware-api-session-id": self._session, "Content-Type": "application/json"}
            http.request(method, BASE + path, body=data, headers=headers)
            response = http.getresponse()
            raw = response.read()
        except OSError as e:
            raise VCenterError(f"tagging {path}: {e}") from e
        finally:
            http.close()
        if response.status == 401 and retry:
            self._session = ""
            return self._request(method, path, body, retry=False)
        if response.status >= 300:
            raise VCenterError(
                f"tagging {method} {path}: HTTP {response.status} {raw[:200]!r}", transient=response.status >= 500
            )
        return json.loads(raw).get("value") if raw else None

    def _login(self) -> None:
        creds = f"{self.conn.settings.user}:{self.conn.settings.secret()}".encode()
        http = self.conn.http(self.conn.settings.call_timeout)
        try:
            http.request(
                "POST", BASE + "/session", headers={"Authorization": "Basic " + base64.b64encode(creds).decode()}
            )
            response = http.getresponse()
            raw = response.read()
        except OSError as e:
            raise VCenterError(f"tagging login: {e}") from e
        finally:
            http.close()
        if response.status == 404:
            raise TaggingUnavailable(f"{BASE}/session answered 404")
        if response.status >= 300:
            raise VCenterError(f"tagging login: HTTP {response.status}", transient=response.status >= 500)
        self._session = str(json.loads(raw)["value"])

    def ensure_tag(self, category: str, tag: str) -> str:
        """The id of tag ``tag`` in ``category``, creating both when missing."""
        cat_id = ""
        for cid in self._request("GET", "/tagging/category") or []:
            if self._request("GET", f"/tagging/category/id:{cid}")["name"] == category:
                cat_id = cid
                break
        if not cat_id:
            spec = {
                "name": category,
                "description": "avscan verdicts",
                "cardinality": "MULTIPLE",
                "associable_types": ["VirtualMachine"],
            }
            cat_id = self._request("POST", "/tagging/category", {"create_spec": spec})
        for tid in self._request("POST", f"/tagging/tag/id:{cat_id}?~action=list-tags-for-category") or []:
            if self._request("GET", f"/tagging/tag/id:{tid}")["name"] == tag:
                return str(tid)
        spec = {"name": tag, "description": "quarantined by avscan", "category_id": cat_id}
        return str(self._request("POST", "/tagging/tag", {"create_spec": spec}))

    def attached(self, vm_moref: str) -> list[str]:
        body = {"object_id": {"id": vm_moref, "type": "VirtualMachine"}}
        return [
            str(t) for t in self._request("POST", "/tagging/tag-association?~action=list-attached-tags", body) or []
        ]

    def attach(self, tag_id: str, vm_moref: str) -> None:
        body = {"object_id": {"id": vm_moref, "type": "VirtualMachine"}}
        self._request("POST", f"/tagging/tag-association/id:{tag_id}?~action=attach", body)

    def detach(self, tag_id: str, vm_moref: str) -> None:
        body = {"object_id": {"id": vm_moref, "type": "VirtualMachine"}}
        self._request("POST", f"/tagging/tag-association/id:{tag_id}?~action=detach", body)
