"""l3net.model.validate.bgp: the Node, BGPConfiguration and BGPPeer specs.

Owns a node's BGP addresses and AS number; the BGPConfiguration fields, its community references
and its naming rule (``default`` for the cluster, ``node.<node>`` per node, where the mesh switch
and AS number may not be set); a BGPPeer's choice of peer (``peerIP`` with ``asNumber``, or
``peerSelector``) and node (``node`` or ``nodeSelector``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from l3net.model.validate.addresses import cidr, cidr_of, interface_address, ip_address, peer_ip
from l3net.model.validate.bfd import BFD_SPEC
from l3net.model.validate.bgp_fields import asn, community_value, duration, timers_post
from l3net.model.validate.checker import (
    Check,
    Checker,
    boolean,
    enum,
    format_path,
    integer,
    listof,
    obj,
    short,
    string,
    typename,
    unsupported,
)
from l3net.model.validate.names import dns_name, dns_reason
from l3net.model.validate.selectors import calico_selector_check
from l3net.model.values import is_community

_log = logging.getLogger(__name__)

__all__ = ["BGP_CONFIGURATION_SPEC", "BGP_FILTER_SPEC", "BGP_PEER_SPEC", "MAX_PASSWORD_BYTES", "NODE_SPEC", "REDACTED",
           "bgp_configuration_name_check"]

NODE_SPEC = obj({
    "bgp": obj({
        "ipv4Address": interface_address(4),
        "ipv6Address": interface_address(6),
        "asNumber": asn,
        "routeReflectorClusterID": ip_address(4),
    }),
    # What calico-node writes about itself (calicoctl exports carry them): l3net's node addresses are the
    # bgp ones and a node is named by metadata.name, so a non-empty list is refused, never kept unread.
    "addresses": unsupported(listof(obj({"address": string(non_empty=True),
                                         "type": enum("CalicoNodeIP", "InternalIP", "ExternalIP")},
                                        required=("address",))), lambda v: v == [],
                             "the node's addresses are spec.bgp.ipv4Address and ipv6Address"),
    "orchRefs": unsupported(listof(obj({"nodeName": string(non_empty=True), "orchestrator": string(non_empty=True)})),
                            lambda v: v == [], "a node is named by metadata.name; no orchestrator references"),
})

# What ``l3netctl get`` prints instead of a password; applying it back is refused, not stored.
REDACTED = "<redacted>"
MAX_PASSWORD_BYTES = 80   # TCP_MD5SIG_MAXKEYLEN
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")


def password_value(c: Checker, value: Any, path: str) -> Any:
    """An MD5 password: 1..80 bytes of UTF-8. Any byte is fine (it reaches ExaBGP base64-encoded);
    the reason never quotes the value, so a rejected password is not echoed into logs or terminals."""
    if not isinstance(value, str):
        return c.error(path, f"must be a string, not {typename(value)}")
    size = len(value.encode("utf-8", errors="surrogatepass"))
    if not 1 <= size <= MAX_PASSWORD_BYTES:
        return c.error(path, f"must be 1..{MAX_PASSWORD_BYTES} bytes of UTF-8, not {size} (value not shown)")
    if value == REDACTED:
        return c.error(path, f"{REDACTED} is what l3netctl prints instead of a password: "
                             "apply the real value or use secretKeyRef")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return c.error(path, "is not valid UTF-8 (value not shown)")
    return value


def secret_key_part(what: str) -> Check:
    """A Secret's name (DNS subdomain) or key (``[-._a-zA-Z0-9]+``, not ``.``/``..``): a path component."""

    def check(c: Checker, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            return c.error(path, f"must be a string, not {typename(value)}")
        if what == "name":
            reason = dns_reason(value, label=False)
            return c.error(path, reason) if reason else value
        if not _SECRET_KEY.fullmatch(value) or value in (".", ".."):
            return c.error(path, f"{short(value)} is not a Secret key ([-._a-zA-Z0-9]+, not '.' or '..')")
        return value

    return check


def _secret_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if (raw.get("value") is None) == (raw.get("secretKeyRef") is None):
        c.error(format_path(path, "value"), "set exactly one of value and secretKeyRef")


_SECRET_VALUE = obj({
    "value": password_value,
    "secretKeyRef": obj({"name": secret_key_part("name"), "key": secret_key_part("key")}, required=("name", "key")),
}, post=_secret_post)
_CIDR_ITEM = obj({"cidr": cidr}, required=("cidr",))
_SERVICE_IPS = listof(_CIDR_ITEM)
# Read from the BGPConfiguration named 'default' only (felix.services): refused elsewhere, never ignored.
CLUSTER_WIDE_FIELDS = ("nodeToNodeMeshEnabled", "asNumber", "serviceClusterIPs", "serviceExternalIPs",
                       "serviceLoadBalancerIPs")


def _bgpconfig_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    names = set()
    comms = out.get("communities")
    for comm in comms if isinstance(comms, list) else []:
        if isinstance(comm, dict) and "name" in comm:
            names.add(comm["name"])
    advs = raw.get("prefixAdvertisements")
    for i, adv in enumerate(advs if isinstance(advs, list) else []):
        if not isinstance(adv, dict) or not isinstance(adv.get("communities"), list):
            continue
        for j, ref in enumerate(adv["communities"]):
            if isinstance(ref, str) and ref not in names and not is_community(ref):
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
    # Calico's service advertisement (felix.services): every node announces these CIDRs.
    "serviceClusterIPs": _SERVICE_IPS,
    "serviceExternalIPs": _SERVICE_IPS,
    "serviceLoadBalancerIPs": _SERVICE_IPS,
    # Per-peer cap on prefixes accepted from one peer (BGPPeer.maxPrefixes overrides it).
    "maxPrefixes": integer(1, 10_000_000),
    "bfd": BFD_SPEC,
}, post=_bgpconfig_post)


def bgp_configuration_name_check(c: Checker, name: str, spec: dict[str, Any]) -> None:
    """``default`` or ``node.<node name>``; the per-node ones may not set the cluster-wide fields."""
    if name != "default":
        if not name.startswith("node.") or dns_reason(name[5:], label=False):
            c.error("metadata.name", f"{name!r}: a BGPConfiguration is named 'default' or 'node.<node name>'")
        for field in CLUSTER_WIDE_FIELDS:
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
    if out.get("ttlSecurity") and out.get("ebgpMultihop") is not None:
        c.error(format_path(path, "ebgpMultihop"), "cannot be set with ttlSecurity: GTSM sends every packet "
                "with TTL 255 and ttlSecurity already allows the peer that many hops away")
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
    # UseNodeIP: the session is bound to the node's address; None: the kernel picks the source by route
    # (bgp.exabgp_config, bgp.bird_config).
    "sourceAddress": enum("UseNodeIP", "None"),
    # Routes sent to the peer keep their next hop: BIRD's `next hop keep` for an eBGP peer, as Calico writes it.
    "keepOriginalNextHop": boolean,
    "maxRestartTime": duration,
    "ttlSecurity": integer(0, 255),
    # TTL of our packets to an eBGP peer that is not on one of the node's subnets (Cilium's ebgpMultihop):
    # without it such a peer is refused, as it could never come up.
    "ebgpMultihop": integer(1, 255),
    "maxPrefixes": integer(1, 10_000_000),
    "filters": listof(dns_name(), unique=True),
    "bfd": BFD_SPEC,
}, post=_bgppeer_post)


def _filter_rule_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    op, net = out.get("matchOperator"), out.get("cidr")
    if (op is None) != (net is None):
        c.error(format_path(path, "matchOperator" if op is None else "cidr"), "cidr and matchOperator go together")
    plen = out.get("prefixLength") or {}
    lo, hi = plen.get("min"), plen.get("max")
    if lo is not None and hi is not None and lo > hi:
        c.error(format_path(path, "prefixLength"), f"min {lo} is above max {hi}")


def _filter_rules(version: int) -> Check:
    bits = 32 if version == 4 else 128
    return listof(obj({
        "cidr": cidr_of(version),
        "matchOperator": enum("Equal", "NotEqual", "In", "NotIn"),
        "prefixLength": obj({"min": integer(0, bits), "max": integer(0, bits)}),
        "action": enum("Accept", "Reject"),
    }, required=("action",), post=_filter_rule_post))


# Calico's BGPFilter: rules in order, the first whose cidr/prefixLength match decides; no match goes
# on to the next filter of the peer and, after the last, to l3net's defaults.
BGP_FILTER_SPEC = obj({
    "exportV4": _filter_rules(4),
    "importV4": _filter_rules(4),
    "exportV6": _filter_rules(6),
    "importV6": _filter_rules(6),
})
