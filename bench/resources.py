"""bench.resources: the WorkloadEndpoint, Namespace and NetworkPolicy resources the benchmarks (and the tests'
builders) load, shaped as the model hands them over. Imports the model only."""

from __future__ import annotations

from typing import Any

from l3net.model import Resource
from l3net.model.validation import host_veth_name, workload_endpoint_name

__all__ = ["netpol", "ns", "wep"]


def wep(pod: str, ns: str, node: str, ip: str | list[str], labels: dict[str, str] | None = None,
        ports: list[dict[str, Any]] | None = None) -> Resource:
    ips = [ip] if isinstance(ip, str) else ip
    spec: dict[str, Any] = {"node": node, "orchestrator": "k8s", "pod": pod, "endpoint": "eth0",
                            "ipNetworks": [f"{i}/32" for i in ips], "interfaceName": host_veth_name(ns, pod)}
    if ports:
        spec["ports"] = ports
    return Resource("WorkloadEndpoint", workload_endpoint_name(node, pod, "eth0"), spec, namespace=ns,
                    labels=dict(labels or {}))


def ns(name: str, labels: dict[str, str] | None = None) -> Resource:
    return Resource("Namespace", name, {}, labels=dict(labels or {}))


def netpol(name: str, namespace: str, spec: dict[str, Any]) -> Resource:
    return Resource("NetworkPolicy", name, spec, namespace=namespace)
