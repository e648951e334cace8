"""l3net.model.validate.k8s_policy: the Kubernetes NetworkPolicy (networking.k8s.io/v1) spec.

Owns peers (podSelector and/or namespaceSelector, or an ipBlock whose ``except`` entries lie
strictly inside its CIDR), ports (number or named port, ``endPort`` only after a numeric port) and
the API server's defaults (``podSelector: {}``; ``policyTypes`` Ingress, plus Egress when egress
rules are present). :data:`POLICY_TYPES` is shared with Calico's GlobalNetworkPolicy ``types``.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from l3net.model.validate.addresses import cidr, parse_cidr
from l3net.model.validate.checker import Checker, enum, format_path, integer, listof, obj
from l3net.model.validate.ports import K8S_PROTOCOLS, k8s_port
from l3net.model.validate.selectors import LABEL_SELECTOR

_log = logging.getLogger(__name__)

__all__ = ["NETWORK_POLICY_SPEC", "POLICY_TYPES"]

_PEER_FIELDS = ("podSelector", "namespaceSelector", "ipBlock")


def _ip_block_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if "cidr" not in out:
        return
    outer = ipaddress.ip_network(out["cidr"])
    raw_except = raw.get("except")
    if not isinstance(raw_except, list):
        return
    for i, item in enumerate(raw_except):
        if not isinstance(item, str):
            continue
        inner, _ = parse_cidr(item)
        if inner is None:
            continue
        p = f"{path}.except[{i}]"
        if inner.version != outer.version:
            c.error(p, f"{item} is IPv{inner.version} but cidr {out['cidr']} is IPv{outer.version}")
        elif not inner.subnet_of(outer) or inner == outer:  # type: ignore[arg-type]
            c.error(p, f"{item} is not strictly inside cidr {out['cidr']}")


_IP_BLOCK = obj({"cidr": cidr, "except": listof(cidr)}, required=("cidr",), post=_ip_block_post)


def _peer_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    present = [k for k in _PEER_FIELDS if raw.get(k) is not None]
    if not present and all(k in _PEER_FIELDS for k in raw):
        c.error(path, "empty peer: set podSelector, namespaceSelector or ipBlock "
                      "(to match everything, omit the 'from'/'to' list instead)")
    if "ipBlock" in present and len(present) > 1:
        c.error(path, "ipBlock cannot be combined with podSelector or namespaceSelector in one peer")


_PEER = obj({"podSelector": LABEL_SELECTOR, "namespaceSelector": LABEL_SELECTOR, "ipBlock": _IP_BLOCK},
            post=_peer_post)


def _np_port_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if "endPort" not in raw or "endPort" not in out:
        return
    p = format_path(path, "endPort")
    port = raw.get("port")
    if port is None:
        c.error(p, "endPort needs a numeric port")
    elif isinstance(port, str):
        c.error(p, "endPort cannot be used with a named port")
    elif "port" in out and out["endPort"] < out["port"]:
        c.error(p, f"endPort {out['endPort']} is smaller than port {out['port']}")


_NP_PORT = obj({
    "protocol": enum(*K8S_PROTOCOLS),
    "port": k8s_port,
    "endPort": integer(1, 65535),
}, post=_np_port_post)

# NetworkPolicy ``policyTypes`` and GlobalNetworkPolicy ``types``: the same two values, each once.
POLICY_TYPES = listof(enum("Ingress", "Egress"), unique=True)


def _np_spec_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    out.setdefault("podSelector", {})
    if "policyTypes" not in raw or raw.get("policyTypes") is None:
        # The API server's default: Ingress always, Egress when egress rules exist.
        out["policyTypes"] = ["Ingress", "Egress"] if raw.get("egress") else ["Ingress"]


NETWORK_POLICY_SPEC = obj({
    "podSelector": LABEL_SELECTOR,
    "ingress": listof(obj({"from": listof(_PEER), "ports": listof(_NP_PORT)})),
    "egress": listof(obj({"to": listof(_PEER), "ports": listof(_NP_PORT)})),
    "policyTypes": POLICY_TYPES,
}, post=_np_spec_post)
