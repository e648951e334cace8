"""l3net.model.validate.document: one document in, one validated :class:`Resource` out.

Owns the document envelope (``apiVersion``, ``kind``, ``metadata``, ``spec``, and a ``status``
object that is dropped: status is written by the system that owns the object, as the Kubernetes
API ignores it on a spec write, so ``calicoctl get -o yaml`` output applies),
``metadata`` (name, namespace, labels, annotations, resourceVersion and the read-only fields that
``get -o yaml`` prints), the document's display name, and the dispatch to the kind's spec check
and name rule (:mod:`l3net.model.validate.kinds`). All errors of a document are collected, then
raised together as one :class:`~l3net.errors.ValidationError`; nothing else is raised.
"""

from __future__ import annotations

import logging
from typing import Any

from l3net.errors import ValidationError
from l3net.model.resource import DOCUMENT_KINDS, KindInfo, Resource, document_kind_info, serving_apis
from l3net.model.validate.checker import Check, Checker, format_path, integer, obj, short, string, typename
from l3net.model.validate.kinds import NAME_CHECKS, NAME_IS_LABEL, SPECS
from l3net.model.validate.names import annotation_map, dns_name, dns_reason, label_map

_log = logging.getLogger(__name__)

__all__ = ["DEFAULT_NAMESPACE", "document_name", "resource_from_document"]

DEFAULT_NAMESPACE = "default"

_ENVELOPE = ("apiVersion", "kind", "metadata", "spec", "status")

# Read-only metadata that `get -o yaml` prints and that may come back on apply.
_EXTRA_METADATA: dict[str, Check] = {
    "uid": string(max_len=128),
    "creationTimestamp": string(max_len=64),
    "generation": integer(0, 2**63 - 1),
}


def _resource_version(c: Checker, value: Any, path: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        return int(value)
    if value == "":
        return 0
    return c.error(path, f"must be a revision number, not {short(value)}")


_METADATA = obj({
    "name": string(),
    "namespace": dns_name(label=True),
    "labels": label_map,
    "annotations": annotation_map,
    "resourceVersion": _resource_version,
    **_EXTRA_METADATA,
}, required=("name",))


def document_name(source: str, doc: Any) -> str:
    """``policies.yaml#2 NetworkPolicy/default/allow-web`` from what the document says about itself."""
    parts = [source] if source else []
    if isinstance(doc, dict):
        kind = doc.get("kind")
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        if isinstance(kind, str) and isinstance(name, str):
            info = document_kind_info(kind, doc.get("apiVersion"))
            if info is not None and info.namespaced:
                ns = ns if isinstance(ns, str) else DEFAULT_NAMESPACE
                parts.append(f"{kind}/{ns}/{name}")
            else:
                parts.append(f"{kind}/{name}")
        elif isinstance(kind, str):
            parts.append(kind)
    return " ".join(parts)


def resource_from_document(doc: dict[str, Any], source: str = "") -> Resource:
    """Validate one ``{apiVersion, kind, metadata, spec}`` document; raise ValidationError with all errors."""
    c = Checker(document_name(source, doc))
    if not isinstance(doc, dict):
        c.error("", f"a resource document must be an object, not {typename(doc)}")
        raise ValidationError(c.errors)
    info = _envelope(c, doc)
    meta = _METADATA(c, doc.get("metadata"), "metadata") if doc.get("metadata") is not None else \
        c.error("metadata", "required field is missing")
    name = meta.get("name") if isinstance(meta, dict) else None
    namespace: str | None = None
    if info is not None and isinstance(meta, dict):
        namespace = _name_and_scope(c, doc, info, meta, name)
    spec: Any = {}
    if info is not None:
        spec = _spec(c, doc, info, name)
    if c.errors:
        raise ValidationError(c.errors)
    assert info is not None and isinstance(meta, dict) and isinstance(name, str)
    extra = {k: meta[k] for k in _EXTRA_METADATA if k in meta}
    return Resource(kind=info.kind, name=name, spec=spec, namespace=namespace,
                    labels=dict(meta.get("labels", {})), annotations=dict(meta.get("annotations", {})),
                    extra_metadata=extra, resource_version=meta.get("resourceVersion", 0), checked_spec=spec)


def _envelope(c: Checker, doc: dict[str, Any]) -> KindInfo | None:
    """Check the top-level keys, ``kind`` and ``apiVersion``; the kind's info, None when the kind is unknown."""
    for key in doc:
        if key not in _ENVELOPE:
            c.error(format_path("", key) if isinstance(key, str) else repr(key),
                    "unknown field; a resource has apiVersion, kind, metadata, spec (and status, ignored)")
    if "status" in doc and not isinstance(doc["status"], dict):
        c.error("status", f"must be an object, not {typename(doc['status'])}")
    kind = doc.get("kind")
    api = doc.get("apiVersion")
    info = document_kind_info(kind, api) if isinstance(kind, str) else None
    if info is None:
        known = ", ".join(sorted(DOCUMENT_KINDS))
        c.error("kind", f"unknown kind {short(kind)}; expected one of {known}" if kind is not None
                else "required field is missing")
    if api is None:
        c.error("apiVersion", "required field is missing")
    elif not isinstance(api, str):
        c.error("apiVersion", f"must be a string, not {typename(api)}")
    elif info is not None and api not in info.accepted_apis:
        c.error("apiVersion", f"{kind} is not served at {short(api)}; use {' or '.join(sorted(serving_apis(kind)))}")
    return info


def _name_and_scope(c: Checker, doc: dict[str, Any], info: KindInfo, meta: dict[str, Any],
                    name: Any) -> str | None:
    """Check the name against the kind's rule and the namespace against its scope; the namespace (None when
    cluster-scoped)."""
    if isinstance(name, str):
        reason = dns_reason(name, label=info.kind in NAME_IS_LABEL)
        if reason:
            c.error("metadata.name", reason)
    if info.namespaced:
        return meta.get("namespace", DEFAULT_NAMESPACE)
    if isinstance(doc.get("metadata"), dict) and doc["metadata"].get("namespace") is not None:
        c.error("metadata.namespace", f"{info.kind} is cluster-scoped and takes no namespace")
    return None


def _spec(c: Checker, doc: dict[str, Any], info: KindInfo, name: Any) -> Any:
    """The kind's checked spec (an absent spec is an empty one), then the kind's rule tying name and spec."""
    raw_spec = doc.get("spec")
    if info.kind == "Namespace" and isinstance(raw_spec, dict) and not raw_spec:
        raw_spec = None
    spec = SPECS[info.kind](c, {} if raw_spec is None else raw_spec, "spec")
    name_check = NAME_CHECKS.get(info.kind)
    if name_check is not None and isinstance(spec, dict) and isinstance(name, str):
        name_check(c, name, spec)
    return spec
