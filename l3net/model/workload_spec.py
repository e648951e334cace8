"""l3net.model.workload_spec: the typed spec of a WorkloadEndpoint, the fields that decide what the kernel gets.

The model validates a WorkloadEndpoint once (:mod:`l3net.model.validate.workload`): ``interfaceName`` is
``cali`` plus 1..11 lowercase letters or digits (never ``eth0``, never a wildcard), every ``ipNetworks``
entry is one unicast address (/32, /128, no scope ID), ``node`` a DNS name. This module turns that
validated spec into a frozen value. The agent wires routes and proxy ARP from it; a wrong interface name
there would hijack one of the node's own interfaces, so the guarantee is structural: a typed spec exists
only for a spec the model validated (a Resource built by hand is validated here first, and refused with
the model's own :class:`~l3net.errors.ValidationError`), and nobody re-checks it with another grammar.

Cheap to call repeatedly: computed once per Resource object and kept on it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from l3net.model.resource import Resource
from l3net.model.typed import typed_once

__all__ = ["WorkloadPort", "WorkloadSpec", "workload_spec"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class WorkloadPort:
    """One named port of the pod (``spec.ports[]``): a NetworkPolicy may name it."""

    name: str
    protocol: str   # TCP, UDP or SCTP (TCP when absent)
    port: int


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """A WorkloadEndpoint's spec as the model validated it; absent is None (lists ``()``)."""

    node: str
    interface_name: str | None = None
    ip_networks: tuple[IPNetwork, ...] = ()
    orchestrator: str | None = None
    pod: str | None = None
    endpoint: str | None = None
    container_id: str | None = None
    mac: str | None = None
    ports: tuple[WorkloadPort, ...] = ()
    service_account_name: str | None = None


def workload_spec(res: Resource) -> WorkloadSpec:
    """The typed spec of a WorkloadEndpoint, computed once per Resource object.

    Raises ValueError for another kind, and the model's ValidationError for one built by hand that the model
    refuses (one that came through the model's validation is taken as it is).
    """
    return typed_once(res, "WorkloadEndpoint", _convert)


def _convert(spec: Mapping[str, Any]) -> WorkloadSpec:
    return WorkloadSpec(
        node=spec["node"], interface_name=spec.get("interfaceName"),
        ip_networks=tuple(ipaddress.ip_network(n) for n in spec.get("ipNetworks") or ()),
        orchestrator=spec.get("orchestrator"), pod=spec.get("pod"), endpoint=spec.get("endpoint"),
        container_id=spec.get("containerID"), mac=spec.get("mac"),
        ports=tuple(WorkloadPort(p["name"], str(p.get("protocol") or "TCP"), p["port"])
                    for p in spec.get("ports") or ()),
        service_account_name=spec.get("serviceAccountName"))
