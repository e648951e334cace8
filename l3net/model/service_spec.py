"""l3net.model.service_spec: the typed spec of a Kubernetes Service, the addresses that BGP may announce for it.

The model validates a Service once (:mod:`l3net.model.validate.service`): ``clusterIP`` and every
``clusterIPs`` entry an address or ``"None"`` (headless), ``clusterIPs[0]`` equal to ``clusterIP`` when both
are set, ``externalIPs`` and ``loadBalancerIPs`` addresses, ``externalTrafficPolicy`` ``Cluster`` or
``Local``, ``selector`` a label map. This module turns that validated spec into a frozen value, and does the
one piece of Kubernetes defaulting the agent depends on: ``cluster_ips`` is ``clusterIPs``, or
``clusterIP`` alone when ``clusterIPs`` is absent (as the API server fills it in), so no reader repeats that
rule. A Resource built by hand is validated first, and refused with the model's own
:class:`~l3net.errors.ValidationError`.

Cheap to call repeatedly: computed once per Resource object and kept on it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from l3net.model.resource import Resource
from l3net.model.typed import typed_once
from l3net.model.validate.service import HEADLESS

__all__ = ["ServiceSpec", "service_spec"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A Service's spec as the model validated it; absent is None (lists ``()``).

    ``cluster_ip`` is the primary cluster IP and ``cluster_ips`` every one of them, the primary first
    (both empty for a headless Service, which ``headless`` tells apart from a Service with none given).
    ``selector`` is the label map as sorted (key, value) pairs; empty selects no pod.
    """

    cluster_ip: IPAddress | None = None
    cluster_ips: tuple[IPAddress, ...] = ()
    headless: bool = False
    external_ips: tuple[IPAddress, ...] = ()
    load_balancer_ips: tuple[IPAddress, ...] = ()
    external_traffic_policy: str | None = None
    selector: tuple[tuple[str, str], ...] = ()


def service_spec(res: Resource) -> ServiceSpec:
    """The typed spec of a Service, computed once per Resource object.

    Raises ValueError for another kind, and the model's ValidationError for one built by hand that the model
    refuses (one that came through the model's validation is taken as it is).
    """
    return typed_once(res, "Service", _convert)


def _addresses(values: Any) -> tuple[IPAddress, ...]:
    return tuple(ipaddress.ip_address(v) for v in values or ())


def _convert(spec: Mapping[str, Any]) -> ServiceSpec:
    one, many = spec.get("clusterIP"), spec.get("clusterIPs")
    given = list(many) if many else ([one] if one is not None else [])
    headless = HEADLESS in given   # the model allows "None" only alone
    cluster_ips = () if headless else _addresses(given)
    return ServiceSpec(cluster_ip=cluster_ips[0] if cluster_ips else None, cluster_ips=cluster_ips,
                       headless=headless, external_ips=_addresses(spec.get("externalIPs")),
                       load_balancer_ips=_addresses(spec.get("loadBalancerIPs")),
                       external_traffic_policy=spec.get("externalTrafficPolicy"),
                       selector=tuple(sorted((spec.get("selector") or {}).items())))
