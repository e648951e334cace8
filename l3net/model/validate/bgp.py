"""l3net.model.validate.bgp: the Node, BGPConfiguration and BGPPeer specs.

Owns a node's BGP addresses and AS number; the BGPConfiguration fields, its community references
and its naming rule (``default`` for the cluster, ``node.<node>`` per node, where the mesh switch
and AS number may not be set); a BGPPeer's choice of peer (``peerIP`` with ``asNumber``, or
``peerSelector``) and node (``node`` or ``nodeSelector``).
"""

from __future__ import annotations

import logging
from typing import Any

from l3net.model.validate.addresses import cidr, interface_address, ip_address, peer_ip
from l3net.model.validate.bfd import BFD_SPEC
from l3net.model.validate.bgp_fields import COMMUNITY, asn, community_value, duration, timers_post
from l3net.model.validate.checker import Checker, boolean, enum, format_path, integer, listof, obj, string
from l3net.model.validate.names import dns_name, dns_reason
from l3net.model.validate.selectors import calico_selector_check

_log = logging.getLogger(__name__)

__all__ = ["BGP_CONFIGURATION_SPEC", "BGP_PEER_SPEC", "NODE_SPEC", "bgp_configuration_name_check"]

NODE_SPEC = obj({
    "bgp": obj({
        "ipv4Address": interface_address(4),
        "ipv6Address": interface_address(6),
        "asNumber": asn,
        "routeReflectorClusterID": ip_address(4),
    }),
})

_SECRET_VALUE = obj({"value": string(max_len=80, non_empty=True)}, required=("value",))
_CIDR_ITEM = obj({"cidr": cidr}, required=("cidr",))


def _bgpconfig_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    names = set()
    for comm in out.get("communities", []) or []:
        if isinstance(comm, dict) and "name" in comm:
            names.add(comm["name"])
    for i, adv in enumerate(raw.get("prefixAdvertisements") or []):
        if not isinstance(adv, dict) or not isinstance(adv.get("communities"), list):
            continue
        for j, ref in enumerate(adv["communities"]):
            if isinstance(ref, str) and ref not in names and not COMMUNITY.fullmatch(ref):
                c.error(f"{path}.prefixAdvertisements[{i}].communities[{j}]",
                        f"{ref!r} is neither a community defined in spec.communities nor a community value")
    timers_post(c, out, path)


BGP_CONFIGURATION_SPEC = obj({
    "nodeToNodeMeshEnabled": boolean,
    "asNumber": asn,
    "listenPort": integer(1, 65535),
    "logSeverityScreen": enum("Debug", "Info", "Warning", "Error", "Fatal"),
    "keepaliveTime": duration,
    "holdTime": duration,
    "gracefulRestart": boolean,
    "restartTime": duration,
    "nodeMeshPassword": _SECRET_VALUE,
    "communities": listof(obj({"name": dns_name(label=True), "value": community_value},
                              required=("name", "value"))),
    "prefixAdvertisements": listof(obj({"cidr": cidr, "communities": listof(string(non_empty=True))},
                                       required=("cidr",))),
    "serviceClusterIPs": listof(_CIDR_ITEM),
    "serviceExternalIPs": listof(_CIDR_ITEM),
    "serviceLoadBalancerIPs": listof(_CIDR_ITEM),
    "bfd": BFD_SPEC,
}, post=_bgpconfig_post)


def bgp_configuration_name_check(c: Checker, name: str, spec: dict[str, Any]) -> None:
    """``default`` or ``node.<node name>``; the per-node ones may not set the mesh switch or AS number."""
    if name != "default":
        if not name.startswith("node.") or dns_reason(name[5:], label=False):
            c.error("metadata.name", f"{name!r}: a BGPConfiguration is named 'default' or 'node.<node name>'")
        for field in ("nodeToNodeMeshEnabled", "asNumber"):
            if field in spec:
                c.error(f"spec.{field}", "may only be set in the BGPConfiguration named 'default'")


def _bgppeer_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if raw.get("node") is not None and raw.get("nodeSelector") is not None:
        c.error(format_path(path, "nodeSelector"), "node and nodeSelector cannot both be set")
    has_ip, has_sel = raw.get("peerIP") is not None, raw.get("peerSelector") is not None
    if has_ip and has_sel:
        c.error(format_path(path, "peerSelector"), "peerIP and peerSelector cannot both be set")
    elif not has_ip and not has_sel:
        c.error(format_path(path, "peerIP"), "set peerIP (with asNumber) or peerSelector")
    elif has_ip and raw.get("asNumber") is None:
        c.error(format_path(path, "asNumber"), "required with peerIP")
    timers_post(c, out, path)


BGP_PEER_SPEC = obj({
    "node": dns_name(),
    "nodeSelector": calico_selector_check,
    "peerIP": peer_ip,
    "peerSelector": calico_selector_check,
    "asNumber": asn,
    "keepaliveTime": duration,
    "holdTime": duration,
    "password": _SECRET_VALUE,
    "sourceAddress": enum("UseNodeIP", "None"),
    "keepOriginalNextHop": boolean,
    "maxRestartTime": duration,
    "ttlSecurity": integer(0, 255),
    "bfd": BFD_SPEC,
}, post=_bgppeer_post)
