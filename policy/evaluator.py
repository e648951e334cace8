"""policy.evaluator: the reference evaluator, Kubernetes NetworkPolicy semantics written as plain code.

This is the test oracle for :mod:`policy.compiler`: a pure function from
(policies, namespaces, workloads, packet) to allow/deny, with no caching and no
cleverness. It reads each policy's raw document, never the model's typed policy
spec (:mod:`l3net.model.policy_spec`) that the compiler reads, so a mistake in that
conversion shows up as a disagreement instead of being shared. The rules it states
(upstream ``networking.k8s.io/v1``):

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

Calico GlobalNetworkPolicy (``projectcalico.org/v3``), as Felix renders tiers:

* GNPs form a tier evaluated **before** the Kubernetes NetworkPolicies (as if
  they sat in a Calico tier ordered ahead of the one holding the k8s policies).
  A GNP applies to an endpoint for a direction when the direction is in
  ``types`` (default Ingress, plus Egress if it has egress rules), its
  ``selector`` (Calico expression; missing = ``all()``) matches the endpoint's
  labels plus Calico's implicit ``projectcalico.org/namespace`` /
  ``projectcalico.org/orchestrator`` in any namespace, and its
  ``namespaceSelector`` (if set) matches the endpoint's namespace labels.
* Applying GNPs run in ``order`` (ascending; no order = after all ordered
  ones; ties by name), each rule in turn. The first rule that matches with
  ``Allow`` allows, with ``Deny`` denies, with ``Pass`` ends the GNP tier and
  hands the packet to the Kubernetes tier; ``Log`` only logs and goes on.
* If some GNP applied and no rule decided or passed: deny (end of tier drop).
* Kubernetes tier as above; if no NetworkPolicy isolates the endpoint the packet
  is allowed (Calico's per-namespace profiles allow everything) - so a ``Pass``
  with no applying NetworkPolicy allows, as in Calico.
* A rule matches when ``protocol`` matches (names or numbers; ICMPv6 never
  matches IPv4), ``notProtocol`` does not, ``icmp`` type/code match, and both
  ``source`` (the packet's source address and port) and ``destination`` match.
  An entity: ``nets`` = address in any; ``notNets`` = in none; ``selector`` and
  ``namespaceSelector`` (ANDed when both) match only known workloads, in any
  namespace; ``notSelector`` excludes the workloads it matches (a non-workload
  address passes it); ``ports`` = port in any (number, ``"lo:hi"``, or a name
  resolved on that side's workload with the rule's protocol); ``notPorts`` = in none.
  An unparsable selector matches nothing.
* Host endpoints (passed with the workloads) are selected like GlobalNetworkSets: their own labels,
  non-namespaced, and their ``expectedIPs`` as the addresses (``policy.host_evaluator`` states
  what policy applies *to* them).
* Network sets (Calico's ``NetworkSet``/``GlobalNetworkSet``, passed with the workloads): a rule
  entity's ``selector`` (with its ``namespaceSelector``) also matches an address inside the IPv4
  ``nets`` of a matching set, and ``notSelector`` excludes such an address. A GlobalNetworkSet's labels
  are its own; a NetworkSet's are its own plus its namespace (as an endpoint's, without the
  orchestrator label). ``namespaceSelector`` is matched against the namespace's labels for namespaced
  things and against no labels for a GlobalNetworkSet; ``global()`` in it is true exactly for the
  non-namespaced (GlobalNetworkSets; a GNP with ``namespaceSelector: global()`` applies to no
  workload). Kubernetes NetworkPolicy peers and the policies' own selectors never select a set.

Calico's namespaced NetworkPolicy (``projectcalico.org/v3``, kind ``CalicoNetworkPolicy`` here):

* It sits in the GNP tier: applying GNPs and NetworkPolicies run together by ``order``; equal
  orders by name, a NetworkPolicy's name being ``<namespace>/<name>`` (as Felix sorts them).
* It applies only to endpoints of its own namespace (its ``selector`` is read there).
* A rule side that sets ``selector``, ``notSelector``, ``namespaceSelector`` or ``serviceAccounts``
  without a ``namespaceSelector`` selects only workloads and NetworkSets of the policy's namespace
  (a side with only ``notSelector`` means: that namespace's, except the excluded); with a
  ``namespaceSelector`` it reads as in a GNP. Everything else is as in a GNP.

Service accounts (both Calico kinds): a workload's account is ``spec.serviceAccountName``; the
account's labels are the workload's ``pcsa.<key>`` labels plus ``projectcalico.org/name`` (the
account's name). ``serviceAccountSelector`` on a policy must match the account's labels for the
policy to apply; a rule side's ``serviceAccounts`` matches only workloads (never a network set)
whose account is in ``names`` (when given) and whose account's labels match ``selector`` (when given).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from l3net.model import Resource
from l3net.model.calico_selector import All, And, Global, Not, Or, Selector
from l3net.model.selectors import parse_calico, parse_label_selector
from policy.model import (
    HOST_ENDPOINT_KIND,
    NETWORK_SET_KINDS,
    calico_policy_name,
    endpoint_labels,
    host_endpoint_ips,
    labels_of_namespace,
    namespace_labels,
    network_set_labels,
    network_set_nets,
    own_labels,
    service_account_labels,
    service_account_name,
    workload_ips,
    workload_ports,
)

__all__ = ["Packet", "is_allowed", "reply_allowed"]


# A policy's top-level fields, read from its raw document by this module's own code: the compiler reads them
# from the model's typed spec (l3net.model.policy_spec), and an oracle that shared that conversion would share
# its mistakes.
def _directions(listed: Any, rules: Any) -> tuple[str, ...]:
    """``policyTypes``/``types`` as written, or the default: Ingress, plus Egress if there is any egress rule."""
    if listed:
        return tuple(t for t in ("Ingress", "Egress") if t in listed)
    return ("Ingress", "Egress") if rules else ("Ingress",)


def _policy_types(spec: Mapping[str, Any]) -> tuple[str, ...]:
    return _directions(spec.get("policyTypes"), spec.get("egress"))


def _calico_types(spec: Mapping[str, Any]) -> tuple[str, ...]:
    return _directions(spec.get("types"), spec.get("egress"))


def _calico_order(spec: Mapping[str, Any]) -> float:
    """Lower first; a policy without ``order`` comes after every ordered one."""
    order = spec.get("order")
    if isinstance(order, (int, float)) and not isinstance(order, bool):
        return float(order)
    return float("inf")


def _is_host_only(pol: Resource) -> bool:
    """Untracked and pre-DNAT GlobalNetworkPolicies apply to host endpoints only."""
    return pol.kind == "GlobalNetworkPolicy" and (pol.spec.get("doNotTrack") is True or
                                                  pol.spec.get("preDNAT") is True)


@dataclass(frozen=True)
class Packet:
    """The first packet of a connection: addresses, protocol (TCP/UDP/SCTP/ICMP) and destination port."""

    src: str
    dst: str
    protocol: str = "TCP"
    dst_port: int | None = None
    src_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None


def is_allowed(policies: Iterable[Resource], namespaces: Iterable[Resource], workloads: Iterable[Resource],
               packet: Packet) -> bool:
    """True when the GlobalNetworkPolicies and NetworkPolicies allow the first packet of this connection."""
    policies = list(policies)
    # Untracked and pre-DNAT policies apply to host endpoints only (policy.host_evaluator).
    gnps = sorted((p for p in policies if p.kind in ("GlobalNetworkPolicy", "CalicoNetworkPolicy")
                   and not _is_host_only(p)),
                  key=lambda p: (_calico_order(p.spec), calico_policy_name(p)))
    nps = [p for p in policies if p.kind == "NetworkPolicy"]
    ns_labels = namespace_labels(namespaces)
    everything = list(workloads)
    wls = [w for w in everything if w.kind == "WorkloadEndpoint"]
    sets = tuple(w for w in everything if w.kind in NETWORK_SET_KINDS or w.kind == HOST_ENDPOINT_KIND)
    src_wl = _by_ip(wls, packet.src)
    dst_wl = _by_ip(wls, packet.dst)
    ctx = _Context(ns_labels, sets)
    if src_wl is not None and not _endpoint_allows(gnps, nps, ctx, src_wl, "Egress", packet, src_wl, dst_wl):
        return False
    return dst_wl is None or _endpoint_allows(gnps, nps, ctx, dst_wl, "Ingress", packet, src_wl, dst_wl)


@dataclass(frozen=True)
class _Context:
    """What rule matching looks up besides the packet: namespace labels, the network sets, and the
    namespace of the Calico NetworkPolicy whose rule is matched (None for a GNP)."""

    ns_labels: Mapping[str, Mapping[str, str]]
    sets: tuple[Resource, ...]
    pol_ns: str | None = None


def _ns_selector_matches(sel: Selector, ns_labels: Mapping[str, str] | None) -> bool:
    """A namespaceSelector on a thing in a namespace with ``ns_labels``, or (None) on a non-namespaced one."""
    if isinstance(sel, Global):
        return ns_labels is None
    if isinstance(sel, All):
        return True
    if isinstance(sel, Not):
        return not _ns_selector_matches(sel.inner, ns_labels)
    if isinstance(sel, And):
        return all(_ns_selector_matches(p, ns_labels) for p in sel.parts)
    if isinstance(sel, Or):
        return any(_ns_selector_matches(p, ns_labels) for p in sel.parts)
    return sel.matches(ns_labels or {})


def _set_selected(netset: Resource, sel: str | None, ns_sel: str | None, ctx: _Context,
                  scoped: bool = False) -> bool:
    """Whether a rule entity's selector (and namespaceSelector) selects this network set.

    ``scoped``: with no namespaceSelector, only a NetworkSet of ``ctx.pol_ns`` (a Calico NetworkPolicy's side).
    """
    if sel is not None and not parse_calico(sel).matches(network_set_labels(netset, ctx.ns_labels)):
        return False
    if ns_sel is None:
        return not scoped or (netset.kind == "NetworkSet" and netset.namespace == ctx.pol_ns)
    ns = labels_of_namespace(ctx.ns_labels, netset.namespace or "") if netset.kind == "NetworkSet" else None
    return _ns_selector_matches(parse_calico(ns_sel), ns)


def _member_nets(member: Resource) -> list[str]:
    """What a network set or host endpoint stands for in a selector: its nets, or its expectedIPs."""
    if member.kind == HOST_ENDPOINT_KIND:
        return [f"{ip}/32" for ip in host_endpoint_ips(member)]
    return network_set_nets(member)


def _in_selected_set(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, sel: str | None, ns_sel: str | None,
                     ctx: _Context, scoped: bool = False) -> bool:
    return any(_set_selected(s, sel, ns_sel, ctx, scoped)
               and any(ip in ipaddress.ip_network(n) for n in _member_nets(s)) for s in ctx.sets)


def _account_matches(match: Mapping[str, Any] | None, wl: Resource | None) -> bool:
    """A rule side's ``serviceAccounts``: a workload whose account has one of ``names`` and matching labels."""
    if wl is None:
        return False
    names, sel = (match or {}).get("names") or [], (match or {}).get("selector")
    if names and service_account_name(wl) not in names:
        return False
    return sel is None or parse_calico(sel).matches(service_account_labels(wl))


def _endpoint_allows(gnps: Sequence[Resource], nps: Sequence[Resource], ctx: _Context,
                     wl: Resource, direction: str, packet: Packet, src_wl: Resource | None,
                     dst_wl: Resource | None) -> bool:
    ns_labels = ctx.ns_labels
    applying = [g for g in gnps if direction in _calico_types(g.spec) and _gnp_selects(g, wl, ns_labels)]
    if applying:
        passed = False
        for gnp in applying:
            rule_ctx = _Context(ns_labels, ctx.sets, gnp.namespace or "" if gnp.kind == "CalicoNetworkPolicy" else None)
            for rule in gnp.spec.get("ingress" if direction == "Ingress" else "egress") or []:
                if not _calico_rule_matches(rule, packet, rule_ctx, src_wl, dst_wl):
                    continue
                action = rule.get("action")
                if action == "Allow":
                    return True
                if action == "Deny":
                    return False
                if action == "Pass":
                    passed = True
                    break
                # Log: logged, evaluation goes on
            if passed:
                break
        if not passed:
            return False  # end of the GNP tier: some policy applied and none allowed or passed
    peer_ip, peer_wl = (packet.dst, dst_wl) if direction == "Egress" else (packet.src, src_wl)
    return _direction_allows(nps, ns_labels, wl, direction, packet, peer_ip=peer_ip, peer_wl=peer_wl, dst_wl=dst_wl)


def _gnp_selects(gnp: Resource, wl: Resource, ns_labels: Mapping[str, Mapping[str, str]]) -> bool:
    if gnp.kind == "CalicoNetworkPolicy" and wl.namespace != gnp.namespace:
        return False  # a namespaced policy applies in its own namespace only
    sa_sel = gnp.spec.get("serviceAccountSelector")
    if sa_sel is not None and not parse_calico(sa_sel).matches(service_account_labels(wl)):
        return False
    sel = gnp.spec.get("selector")
    if sel is not None and not parse_calico(sel).matches(endpoint_labels(wl, ns_labels)):
        return False
    ns_sel = gnp.spec.get("namespaceSelector")
    return ns_sel is None or _ns_selector_matches(parse_calico(ns_sel),
                                                  labels_of_namespace(ns_labels, wl.namespace or ""))


_PROTO_NUMBERS = {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp", 136: "udplite", 58: "icmpv6"}


def _proto_name(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return _PROTO_NUMBERS.get(value, str(value))
    return str(value).lower()


def _calico_rule_matches(rule: Mapping[str, Any], packet: Packet, ctx: _Context,
                         src_wl: Resource | None, dst_wl: Resource | None) -> bool:
    proto = packet.protocol.lower()
    if rule.get("protocol") is not None and _proto_name(rule["protocol"]) != proto:
        return False
    if rule.get("notProtocol") is not None and _proto_name(rule["notProtocol"]) == proto:
        return False
    icmp = rule.get("icmp")
    if icmp and icmp.get("type") is not None:
        if packet.icmp_type != icmp["type"]:
            return False
        if icmp.get("code") is not None and packet.icmp_code != icmp["code"]:
            return False
    rule_proto = _proto_name(rule["protocol"]) if rule.get("protocol") is not None else None
    return (_entity_matches(rule.get("source") or {}, packet.src, packet.src_port, src_wl, rule_proto, ctx)
            and _entity_matches(rule.get("destination") or {}, packet.dst, packet.dst_port, dst_wl, rule_proto, ctx))


def _entity_matches(entity: Mapping[str, Any], ip_text: str, port: int | None, wl: Resource | None,
                    rule_proto: str | None, ctx: _Context) -> bool:
    ns_labels = ctx.ns_labels
    ip = ipaddress.ip_address(ip_text)
    nets = entity.get("nets")
    if nets and not any(ip in ipaddress.ip_network(n, strict=False) for n in nets):
        return False
    if any(ip in ipaddress.ip_network(n, strict=False) for n in entity.get("notNets") or []):
        return False
    sel, ns_sel, accounts = entity.get("selector"), entity.get("namespaceSelector"), entity.get("serviceAccounts")
    accounts = accounts if accounts and (accounts.get("names") or accounts.get("selector") is not None) else None
    # A Calico NetworkPolicy's side that selects anything, without a namespaceSelector: its own namespace only.
    scoped = ctx.pol_ns is not None and ns_sel is None and (
        sel is not None or accounts is not None or entity.get("notSelector") is not None)
    if sel is not None or ns_sel is not None or accounts is not None or scoped:
        # The address is selected through a workload that has it, or a network set whose nets hold it.
        by_wl = wl is not None and (sel is None or parse_calico(sel).matches(endpoint_labels(wl, ns_labels))) and (
            ns_sel is None or _ns_selector_matches(parse_calico(ns_sel),
                                                   labels_of_namespace(ns_labels, wl.namespace or ""))) and (
            not scoped or wl.namespace == ctx.pol_ns) and (accounts is None or _account_matches(accounts, wl))
        by_set = accounts is None and _in_selected_set(ip, sel, ns_sel, ctx, scoped)
        if not by_wl and not by_set:
            return False
    not_sel = entity.get("notSelector")
    if not_sel is not None and ((wl is not None and parse_calico(not_sel).matches(endpoint_labels(wl, ns_labels)))
                                or _in_selected_set(ip, not_sel, None, ctx)):
        return False
    ports = entity.get("ports") or []
    if ports and not any(_calico_port_matches(p, port, wl, rule_proto) for p in ports):
        return False
    return not any(_calico_port_matches(p, port, wl, rule_proto) for p in entity.get("notPorts") or [])


def _calico_port_matches(spec: Any, port: int | None, wl: Resource | None, rule_proto: str | None) -> bool:
    if port is None:
        return False
    if isinstance(spec, int) and not isinstance(spec, bool):
        return spec == port
    text = str(spec)
    if text.isdigit():
        return int(text) == port
    lo, sep, hi = text.partition(":")
    if sep and lo.isdigit() and hi.isdigit():
        return int(lo) <= port <= int(hi)
    return wl is not None and any(name == text and proto.lower() == rule_proto and num == port
                                  for name, proto, num in workload_ports(wl))


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
                and direction in _policy_types(p.spec)
                and parse_label_selector(p.spec.get("podSelector") or {}).matches(own_labels(wl))]
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
    return pod_sel is None or parse_label_selector(pod_sel).matches(own_labels(peer_wl))


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
