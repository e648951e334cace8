"""policy.evaluator: the reference evaluator, Kubernetes NetworkPolicy semantics written as plain code.

This is the test oracle for :mod:`policy.compiler`: a pure function from
(policies, namespaces, workloads, packet) to allow/deny, with no caching and no
cleverness. The rules it states (upstream ``networking.k8s.io/v1``):

* A pod is *isolated* for a direction when at least one NetworkPolicy **in its
  namespace** selects it (``spec.podSelector``; ``{}`` = every pod there) and
  lists that direction in ``policyTypes``. Default when ``policyTypes`` is
  absent: ``Ingress``, plus ``Egress`` if ``spec.egress`` has at least one rule.
* A non-isolated direction allows everything. An isolated one allows a packet
  iff some rule of some policy selecting the pod for that direction allows it
  (policies are a union; order does not matter).
* A rule: ``from``/``to`` missing **or empty** = every peer; otherwise any peer
  matches (OR). ``ports`` missing or empty = every port and protocol; otherwise
  any entry matches. ``ingress: []`` (no rules) allows nothing.
* A peer: ``ipBlock`` matches the peer IP in ``cidr`` and in no ``except``,
  whether or not the IP is a pod. Otherwise the peer must be a known pod:
  ``podSelector`` alone = pods of the policy's namespace; ``namespaceSelector``
  alone = every pod in matching namespaces; both in one peer = AND. A peer with
  none of the three matches nothing (fail closed; validation refuses it).
* A port: ``protocol`` (default TCP) must equal the packet's; ``port`` missing =
  every port of that protocol; a number with optional ``endPort`` (inclusive);
  a name is resolved on the **destination** pod's ``spec.ports`` (same
  protocol). A named port towards a non-pod destination matches nothing.
* A packet between two known pods must pass the source pod's egress and the
  destination pod's ingress. Replies of an allowed connection are allowed
  (conntrack): :func:`reply_allowed`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from l3net.model import Resource
from policy.model import labels_of_namespace, namespace_labels, policy_types, workload_ips, workload_ports
from policy.selectors import parse_label_selector

__all__ = ["Packet", "is_allowed", "reply_allowed"]


@dataclass(frozen=True)
class Packet:
    """The first packet of a connection: addresses, protocol (TCP/UDP/SCTP/ICMP) and destination port."""

    src: str
    dst: str
    protocol: str = "TCP"
    dst_port: int | None = None


def is_allowed(policies: Iterable[Resource], namespaces: Iterable[Resource], workloads: Iterable[Resource],
               packet: Packet) -> bool:
    """True when Kubernetes NetworkPolicy allows the first packet of this connection."""
    policies = [p for p in policies if p.kind == "NetworkPolicy"]
    ns_labels = namespace_labels(namespaces)
    wls = [w for w in workloads if w.kind == "WorkloadEndpoint"]
    src_wl = _by_ip(wls, packet.src)
    dst_wl = _by_ip(wls, packet.dst)
    if src_wl is not None and not _direction_allows(policies, ns_labels, src_wl, "Egress", packet,
                                                    peer_ip=packet.dst, peer_wl=dst_wl, dst_wl=dst_wl):
        return False
    return dst_wl is None or _direction_allows(policies, ns_labels, dst_wl, "Ingress", packet,
                                               peer_ip=packet.src, peer_wl=src_wl, dst_wl=dst_wl)


def reply_allowed(policies: Iterable[Resource], namespaces: Iterable[Resource], workloads: Iterable[Resource],
                  original: Packet) -> bool:
    """A reply travels on the original's conntrack entry: allowed exactly when the original was."""
    return is_allowed(policies, namespaces, workloads, original)


def _by_ip(wls: Sequence[Resource], ip: str) -> Resource | None:
    for w in wls:
        if ip in workload_ips(w, version=None):
            return w
    return None


def _direction_allows(policies: Sequence[Resource], ns_labels: Mapping[str, Mapping[str, str]], wl: Resource,
                      direction: str, packet: Packet, *, peer_ip: str, peer_wl: Resource | None,
                      dst_wl: Resource | None) -> bool:
    applying = [p for p in policies
                if p.namespace == wl.namespace
                and direction in policy_types(p.spec)
                and parse_label_selector(p.spec.get("podSelector") or {}).matches(wl.labels)]
    if not applying:
        return True  # not isolated in this direction
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for pol in applying:
        for rule in pol.spec.get(rules_key) or []:
            if _rule_matches(rule, peers_key, pol.namespace or "", ns_labels, packet, peer_ip, peer_wl, dst_wl):
                return True
    return False


def _rule_matches(rule: Mapping[str, Any], peers_key: str, pol_ns: str, ns_labels: Mapping[str, Mapping[str, str]],
                  packet: Packet, peer_ip: str, peer_wl: Resource | None, dst_wl: Resource | None) -> bool:
    peers = rule.get(peers_key) or []
    if peers and not any(_peer_matches(peer, pol_ns, ns_labels, peer_ip, peer_wl) for peer in peers):
        return False
    ports = rule.get("ports") or []
    return not ports or any(_port_matches(port, packet, dst_wl) for port in ports)


def _peer_matches(peer: Mapping[str, Any], pol_ns: str, ns_labels: Mapping[str, Mapping[str, str]], peer_ip: str,
                  peer_wl: Resource | None) -> bool:
    block = peer.get("ipBlock")
    if block is not None:
        ip = ipaddress.ip_address(peer_ip)
        if ip not in ipaddress.ip_network(block["cidr"], strict=False):
            return False
        return not any(ip in ipaddress.ip_network(ex, strict=False) for ex in block.get("except") or [])
    pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
    if pod_sel is None and ns_sel is None:
        return False
    if peer_wl is None:
        return False
    if ns_sel is None:
        if peer_wl.namespace != pol_ns:
            return False
    elif not parse_label_selector(ns_sel).matches(labels_of_namespace(ns_labels, peer_wl.namespace or "")):
        return False
    return pod_sel is None or parse_label_selector(pod_sel).matches(peer_wl.labels)


def _port_matches(port: Mapping[str, Any], packet: Packet, dst_wl: Resource | None) -> bool:
    protocol = str(port.get("protocol") or "TCP").upper()
    if packet.protocol.upper() != protocol:
        return False
    number = port.get("port")
    if number is None:
        return True
    if packet.dst_port is None:
        return False
    if isinstance(number, int):
        end = port.get("endPort")
        return number <= packet.dst_port <= (end if isinstance(end, int) else number)
    if dst_wl is None:
        return False
    return any(name == number and proto == protocol and num == packet.dst_port
               for name, proto, num in workload_ports(dst_wl))
