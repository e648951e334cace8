"""l3net.model.validate.service: the Service spec, the parts of a Kubernetes Service that BGP advertises.

Owns ``clusterIP``/``clusterIPs`` (addresses, or ``None`` for a headless Service, as in
Kubernetes: ``clusterIPs[0]`` is ``clusterIP`` when both are set), ``externalIPs``,
``loadBalancerIPs`` (the addresses of the Kubernetes ``status.loadBalancer.ingress``, which the
kube-controller copies here: l3net documents have no status), ``externalTrafficPolicy`` and
``selector`` (the labels of the pods behind it; absent or empty selects no pod, as a Kubernetes
Service without selector gets no endpoints from the selector). Ports and the Service type are not
modelled: advertisement does not depend on them.
"""

from __future__ import annotations

import logging
from typing import Any

from l3net.model.validate.addresses import ip_address
from l3net.model.validate.checker import Checker, enum, listof, obj, typename
from l3net.model.validate.names import label_map

_log = logging.getLogger(__name__)

__all__ = ["HEADLESS", "SERVICE_SPEC"]

HEADLESS = "None"
_ADDRESS = ip_address()


def _cluster_ip(c: Checker, value: Any, path: str) -> Any:
    if value == HEADLESS:
        return value
    if not isinstance(value, str):
        return c.error(path, f"must be an IP address or 'None', not {typename(value)}")
    return _ADDRESS(c, value, path)


def _service_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    one, many = out.get("clusterIP"), out.get("clusterIPs")
    if one is not None and many and many[0] != one:
        c.error(f"{path}.clusterIPs[0]", f"must equal clusterIP ({one!r}) when both are set, as in Kubernetes")
    if many and HEADLESS in many and len(many) > 1:
        c.error(f"{path}.clusterIPs", "'None' (headless) cannot be listed with addresses")


SERVICE_SPEC = obj({
    "clusterIP": _cluster_ip,
    "clusterIPs": listof(_cluster_ip, unique=True),
    "externalIPs": listof(_ADDRESS, unique=True),
    "loadBalancerIPs": listof(_ADDRESS, unique=True),
    "externalTrafficPolicy": enum("Cluster", "Local"),
    "selector": label_map,
}, post=_service_post)
