"""l3net.model.validate.calico_policy: the Calico GlobalNetworkPolicy and (namespaced) NetworkPolicy specs.

Owns rules (action, protocol, ICMP type/code, source and destination entities with nets,
selectors, service accounts and ports), the rule-level consistency checks (ports need a port
protocol, ICMP needs an ICMP protocol) and the ``types`` default (Ingress, plus Egress when egress
rules are present). The namespaced NetworkPolicy (``projectcalico.org/v3``) has the same rules and
``order``/``selector``/``types``/``serviceAccountSelector``, and none of the cluster-wide fields
(``namespaceSelector``, the host-endpoint flags). The host-endpoint flags (doNotTrack, preDNAT,
applyOnForward) follow Calico's rules: preDNAT and doNotTrack exclude each other, either needs
applyOnForward, and a preDNAT policy is Ingress only. Service matches are refused unless empty
(l3net.model.parity lists every field).
"""

from __future__ import annotations

import logging
from typing import Any

from l3net.model.validate.addresses import cidr
from l3net.model.validate.checker import (
    Checker,
    boolean,
    enum,
    format_path,
    integer,
    listof,
    number,
    obj,
    string,
    unsupported,
)
from l3net.model.validate.k8s_policy import POLICY_TYPES
from l3net.model.validate.names import dns_name
from l3net.model.validate.ports import PORT_PROTOCOLS, calico_port, calico_protocol
from l3net.model.validate.selectors import calico_selector_check

_log = logging.getLogger(__name__)

__all__ = ["CALICO_NETWORK_POLICY_SPEC", "GLOBAL_NETWORK_POLICY_SPEC"]

_ENTITY = obj({
    "nets": listof(cidr),
    "notNets": listof(cidr),
    "selector": calico_selector_check,
    "notSelector": calico_selector_check,
    "namespaceSelector": calico_selector_check,
    "ports": listof(calico_port),
    "notPorts": listof(calico_port),
    # A pod's ServiceAccount: its name, or a selector over the account's labels (policy.compiler).
    "serviceAccounts": obj({"names": listof(dns_name()), "selector": calico_selector_check}),
    # Calico matches these against Services: l3net has none in its model.
    "services": unsupported(obj({"name": string(), "namespace": string()}), lambda v: not v,
                            "Services are not matched"),
})


def _icmp_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if raw.get("code") is not None and raw.get("type") is None:
        c.error(format_path(path, "code"), "icmp code needs an icmp type")


_ICMP = obj({"type": integer(0, 254), "code": integer(0, 255)}, post=_icmp_post)


def _rule_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    proto = out.get("protocol")
    for side in ("source", "destination"):
        entity = raw.get(side)
        if not isinstance(entity, dict):
            continue
        for field in ("ports", "notPorts"):
            if entity.get(field) and proto not in PORT_PROTOCOLS:
                c.error(f"{path}.{side}.{field}", "ports need protocol TCP, UDP, SCTP or UDPLite on the rule")
    if raw.get("icmp") is not None and proto not in ("ICMP", "ICMPv6", 1, 58):
        c.error(format_path(path, "icmp"), "icmp needs protocol ICMP or ICMPv6 on the rule")


_RULE = obj({
    "action": enum("Allow", "Deny", "Log", "Pass"),
    "protocol": calico_protocol,
    "notProtocol": calico_protocol,
    "icmp": _ICMP,
    "source": _ENTITY,
    "destination": _ENTITY,
}, required=("action",), post=_rule_post)


def _gnp_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if raw.get("types") is None:
        out["types"] = ["Ingress", "Egress"] if raw.get("egress") else ["Ingress"]


def _global_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    """Calico's own rules for the host endpoint flags (its GlobalNetworkPolicy validation)."""
    _gnp_post(c, raw, out, path)
    pre_dnat, untracked = out.get("preDNAT") is True, out.get("doNotTrack") is True
    if pre_dnat and untracked:
        c.error(format_path(path, "preDNAT"), "preDNAT and doNotTrack cannot both be true")
    for flag, on in (("preDNAT", pre_dnat), ("doNotTrack", untracked)):
        if on and out.get("applyOnForward") is not True:
            c.error(format_path(path, "applyOnForward"),
                    f"must be true when {flag} is true ({flag} policy applies to forwarded traffic too)")
    if pre_dnat:
        if raw.get("egress"):
            c.error(format_path(path, "egress"), "a preDNAT policy has ingress rules only")
        if "Egress" in (out.get("types") or ()):
            c.error(format_path(path, "types"), "a preDNAT policy applies to Ingress only")


# The fields both kinds share; the endpoint side: selector ANDed with serviceAccountSelector.
_COMMON = {
    "order": number,
    "selector": calico_selector_check,
    "serviceAccountSelector": calico_selector_check,
    "types": POLICY_TYPES,
    "ingress": listof(_RULE),
    "egress": listof(_RULE),
    # Calico's tiers: l3net has the default one only (Calico's policies ahead of Kubernetes').
    "tier": unsupported(string(), lambda v: v == "default", "only the default tier exists"),
}

GLOBAL_NETWORK_POLICY_SPEC = obj({
    **_COMMON,
    "namespaceSelector": calico_selector_check,
    # Host endpoint policy (policy.host_endpoints): untracked in the raw table, pre-DNAT in the mangle
    # table, and whether it also polices traffic forwarded through the host endpoint.
    "doNotTrack": boolean,
    "preDNAT": boolean,
    "applyOnForward": boolean,
}, post=_global_post)

# Calico's namespaced NetworkPolicy: it applies in its own namespace only, so it has no namespaceSelector
# and no host endpoint flags (an unknown field there is refused by name, as everywhere).
CALICO_NETWORK_POLICY_SPEC = obj(_COMMON, post=_gnp_post)
