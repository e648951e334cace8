"""Minimal OpenAPI v3 documents for the lab's Kubernetes API stand-in.

``kubectl`` validates what it sends either on the client, against the full
OpenAPI v2 schema (protobuf, which the stand-in does not serve), or, when the
server's OpenAPI v3 declares the ``fieldValidation`` query parameter on a kind's
PATCH operation, by asking the server to. These documents declare exactly that
for each kind, so plain ``kubectl apply`` works; they carry no schemas, so
``kubectl`` computes strategic merge patches from its built-in types.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from l3net.lab.kubeapi.store import RESOURCES

__all__ = ["gv_document", "root_document"]


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def gv_document(group: str, version: str) -> dict[str, Any] | None:
    paths: dict[str, Any] = {}
    found = False
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        found = True
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        op = {"x-kubernetes-group-version-kind": gvk, "operationId": f"patch{r.kind}",
              "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                             {"name": "dryRun", "in": "query", "schema": {"type": "string"}}],
              "responses": {"200": {"description": "OK"}}}
        scope = f"/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"/{r.plural}"
        paths[f"/{_gv_path(group, version)}{scope}/{{name}}"] = {"patch": op}
    if not found:
        return None
    return {"openapi": "3.0.0", "info": {"title": "l3net lab Kubernetes API stand-in", "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": {}}}


def root_document() -> dict[str, Any]:
    gvs = sorted({(r.group, r.version) for r in RESOURCES})
    out = {}
    for g, v in gvs:
        digest = hashlib.sha256(json.dumps(gv_document(g, v), sort_keys=True).encode()).hexdigest()[:16].upper()
        out[_gv_path(g, v)] = {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash={digest}"}
    return {"paths": out}
