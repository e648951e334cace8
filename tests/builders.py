"""tests.builders: resource builders shaped as the model hands them over (WorkloadEndpoint, Namespace, policies),
and :class:`Upd`, one datastore update as the syncer delivers it to the agent's model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.resources import netpol, ns, wep  # shared with the benchmarks, which may not import tests
from l3net.model import Resource

__all__ = ["Upd", "cnp", "gnp", "hep", "netpol", "netset", "ns", "wep"]


@dataclass
class Upd:
    """A ``felix.calc.KeyUpdateLike``: a key, its value (None: deleted) and the revision it was seen at."""

    key: str
    value: bytes | None
    revision: int = 1


def gnp(name: str, spec: dict[str, Any]) -> Resource:
    return Resource("GlobalNetworkPolicy", name, spec)


def netset(name: str, nets: list[str], labels: dict[str, str] | None = None,
           namespace: str | None = None) -> Resource:
    """A GlobalNetworkSet, or with ``namespace`` a NetworkSet."""
    kind = "NetworkSet" if namespace else "GlobalNetworkSet"
    return Resource(kind, name, {"nets": list(nets)}, namespace=namespace, labels=dict(labels or {}))


def cnp(name: str, namespace: str, spec: dict[str, Any]) -> Resource:
    """A Calico (``projectcalico.org/v3``) NetworkPolicy in ``namespace``."""
    return Resource("CalicoNetworkPolicy", name, spec, namespace=namespace)


def hep(name: str, node: str, iface: str, labels: dict[str, str] | None = None,
        ips: list[str] | None = None) -> Resource:
    """A HostEndpoint: ``node``'s interface ``iface``, with its labels and expectedIPs."""
    spec: dict[str, Any] = {"node": node, "interfaceName": iface}
    if ips:
        spec["expectedIPs"] = list(ips)
    return Resource("HostEndpoint", name, spec, labels=dict(labels or {}))
