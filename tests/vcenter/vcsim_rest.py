"""vSphere tags read straight from vcsim's Automation REST API with the standard library: the
oracle for what the product's own tagging client (``scanner.vcenter.tags``) did."""

from __future__ import annotations

import base64
import http.client
import json
from typing import Any

from scanner.lab.vcsim import PASSWORD, USER, Vcsim

CIS = "/rest/com/vmware/cis"


def _call(port: int, method: str, path: str, token: str = "", body: Any = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["vmware-api-session-id"] = token
        else:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        conn.request(method, CIS + path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        assert response.status == 200, f"{method} {path}: HTTP {response.status} {raw[:200]!r}"
        return json.loads(raw)["value"] if raw else None
    finally:
        conn.close()


def attached_tag_names(vcsim: Vcsim, vm_moref: str) -> list[tuple[str, str]]:
    """(category name, tag name) of every tag attached to the VM ``vm_moref``, sorted."""
    token = _call(vcsim.port, "POST", "/session")
    body = {"object_id": {"id": vm_moref, "type": "VirtualMachine"}}
    out = []
    listed = _call(vcsim.port, "POST", "/tagging/tag-association?~action=list-attached-tags", token, body)
    for tag_id in listed or []:  # vcsim answers null for none
        tag = _call(vcsim.port, "GET", f"/tagging/tag/id:{tag_id}", token)
        category = _call(vcsim.port, "GET", f"/tagging/category/id:{tag['category_id']}", token)
        out.append((str(category["name"]), str(tag["name"])))
    return sorted(out)
