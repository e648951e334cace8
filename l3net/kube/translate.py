"""Pure translation from Kubernetes objects to what the l3net datastore holds for them.

Used by the kube-controller (to keep the datastore equal to the cluster) and by
the CNI plugin (to give a pod's WorkloadEndpoint its labels and ports at ADD),
so both compute exactly the same values and the controller's first pass over a
new endpoint writes nothing.
"""

from __future__ import annotations

from typing import Any

from l3net.model.labels import RESERVED_LABEL_PREFIXES, SERVICE_ACCOUNT_LABEL_PREFIX

__all__ = ["MARK", "MARK_VALUE", "endpoint_fields", "is_marked", "namespace_doc", "node_doc", "policy_doc",
           "service_doc"]

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


def _strings(values: Any) -> list[str]:
    return [str(v) for v in values if isinstance(v, str) and v] if isinstance(values, list) else []


def service_doc(svc: dict[str, Any]) -> dict[str, Any]:
    """A ``v1`` Service as l3net's Service: the fields BGP advertisement reads, nothing else.

    ``loadBalancerIPs`` are the ``ip`` of ``status.loadBalancer.ingress`` (a ``hostname`` ingress has no
    address to announce); empty fields are left out, so an unchanged Service compares equal.
    """
    meta = _meta(svc)
    spec = svc.get("spec") if isinstance(svc.get("spec"), dict) else {}
    status = svc.get("status") if isinstance(svc.get("status"), dict) else {}
    lb = status.get("loadBalancer") if isinstance(status.get("loadBalancer"), dict) else {}
    ingress = lb.get("ingress") if isinstance(lb.get("ingress"), list) else []
    out: dict[str, Any] = {
        "clusterIP": spec.get("clusterIP") or None,
        "clusterIPs": _strings(spec.get("clusterIPs")),
        "externalIPs": _strings(spec.get("externalIPs")),
        "loadBalancerIPs": _strings([i.get("ip") for i in ingress if isinstance(i, dict)]),
        "externalTrafficPolicy": spec.get("externalTrafficPolicy") or None,
        "selector": spec.get("selector") if isinstance(spec.get("selector"), dict) else None,
    }
    return {"apiVersion": "l3net.io/v1", "kind": "Service",
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "labels": _labels(svc),
                         "annotations": {MARK: MARK_VALUE}},
            "spec": {k: v for k, v in out.items() if v}}


def node_doc(node: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "l3net.io/v1", "kind": "Node",
            "metadata": {"name": _meta(node).get("name"), "labels": _labels(node), "annotations": {MARK: MARK_VALUE}},
            "spec": {}}


def pod_service_account(pod: dict[str, Any]) -> str:
    """The name of a pod's ServiceAccount: ``serviceAccountName``, else the deprecated ``serviceAccount`` (which
    the API server still honours), else ``default``. One rule for the account's name and for whose labels a
    pod's endpoints carry."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")


def endpoint_fields(pod: dict[str, Any], sa: dict[str, Any] | None) -> tuple[dict[str, str], list[dict[str, Any]], str]:
    """``(labels, ports, serviceAccountName)`` of a pod's WorkloadEndpoints.

    Labels: the pod's, the implicit namespace/orchestrator/service-account labels
    (which a pod cannot override), and the service account's labels as ``pcsa.<key>``.
    Ports: every named container port (what a policy's named ``port`` resolves to).
    """
    meta = _meta(pod)
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    sa_name = pod_service_account(pod)
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
