"""Pure translation from Kubernetes objects to what the l3net datastore holds for them.

Used by the kube-controller (to keep the datastore equal to the cluster) and by
the CNI plugin (to give a pod's WorkloadEndpoint its labels and ports at ADD),
so both compute exactly the same values and the controller's first pass over a
new endpoint writes nothing.
"""

from __future__ import annotations

from typing import Any

from l3net.model.labels import RESERVED_LABEL_PREFIXES, SERVICE_ACCOUNT_LABEL_PREFIX

__all__ = ["MARK", "MARK_VALUE", "endpoint_fields", "is_marked", "namespace_doc", "node_doc", "policy_doc"]

# Annotation on every datastore object the kube-controller owns. Objects without it (written with
# l3netctl, the lab or an agent) are never modified or deleted by the controller.
MARK = "l3net.io/managed-by"
MARK_VALUE = "kube-controller"

NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
# Calico puts a service account's labels on its pods' endpoints under this prefix.
SA_LABEL_PREFIX = SERVICE_ACCOUNT_LABEL_PREFIX
# Keys a pod's own labels may not carry onto its endpoint: the reserved prefixes plus the service-account
# prefix this module fills in itself.
RESERVED_PREFIXES = (*RESERVED_LABEL_PREFIXES, SA_LABEL_PREFIX)


def is_marked(annotations: dict[str, str] | None) -> bool:
    return (annotations or {}).get(MARK) == MARK_VALUE


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    labels = _meta(obj).get("labels")
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def namespace_doc(ns: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": _meta(ns).get("name"), "labels": _labels(ns), "annotations": {MARK: MARK_VALUE}}}


def policy_doc(np: dict[str, Any]) -> dict[str, Any]:
    """A ``networking.k8s.io/v1`` NetworkPolicy as it is (l3net stores the Kubernetes schema verbatim)."""
    meta = _meta(np)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "labels": _labels(np),
                         "annotations": {MARK: MARK_VALUE}},
            "spec": np.get("spec") or {}}


def node_doc(node: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "l3net.io/v1", "kind": "Node",
            "metadata": {"name": _meta(node).get("name"), "labels": _labels(node), "annotations": {MARK: MARK_VALUE}},
            "spec": {}}


def endpoint_fields(pod: dict[str, Any], sa: dict[str, Any] | None) -> tuple[dict[str, str], list[dict[str, Any]], str]:
    """``(labels, ports, serviceAccountName)`` of a pod's WorkloadEndpoints.

    Labels: the pod's, the implicit namespace/orchestrator/service-account labels
    (which a pod cannot override), and the service account's labels as ``pcsa.<key>``.
    Ports: every named container port (what a policy's named ``port`` resolves to).
    """
    meta = _meta(pod)
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    sa_name = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
    labels = {k: v for k, v in _labels(pod).items() if not k.startswith(RESERVED_PREFIXES)}
    if sa is not None:
        for k, v in _labels(sa).items():
            labels[f"{SA_LABEL_PREFIX}{k}"] = v
    labels[NAMESPACE_LABEL] = str(meta.get("namespace") or "default")
    labels[ORCHESTRATOR_LABEL] = "k8s"
    labels[SERVICE_ACCOUNT_LABEL] = sa_name
    ports: list[dict[str, Any]] = []
    for c in spec.get("containers") or []:
        for p in (c.get("ports") or []) if isinstance(c, dict) else []:
            if isinstance(p, dict) and p.get("name") and isinstance(p.get("containerPort"), int):
                ports.append({"name": str(p["name"]), "protocol": str(p.get("protocol") or "TCP"),
                              "port": p["containerPort"]})
    ports.sort(key=lambda p: (p["name"], p["protocol"], p["port"]))
    return labels, ports, sa_name
