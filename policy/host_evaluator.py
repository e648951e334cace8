"""policy.host_evaluator: the reference evaluator for host endpoints, Calico's rules written as plain code.

The test oracle for :mod:`policy.host_endpoints` (as :mod:`policy.evaluator` is for workload
policy): a pure function from (policies, host endpoints, workloads, packet, the interfaces it
arrives on and leaves by) to allow/deny, with no iptables in sight. Like :mod:`policy.evaluator`
it reads each policy's raw document, never the typed spec (:mod:`l3net.model.policy_spec`) that
the code it checks reads. The rules, from Calico's summary of host endpoint policy:

* Only GlobalNetworkPolicies apply to a host endpoint: ``selector`` over the endpoint's own
  labels; a ``namespaceSelector`` sees a non-namespaced thing (only ``global()`` and ``all()``
  style selectors match). Three kinds: untracked (``doNotTrack``), pre-DNAT (``preDNAT``) and
  normal; ``applyOnForward`` adds a normal policy to forwarded traffic.
* A packet arriving through a host endpoint: untracked ingress policy first, then pre-DNAT
  ingress policy. Each decides only on a matching Allow or Deny (first match, by ``order``, Pass
  ends the kind's turn, Log goes on); no decision goes on. An Allow of either skips the later
  normal policy of the endpoint it came in by (and the host's own, for traffic to the host), but
  not the forward egress policy of the endpoint it leaves by, nor a workload's own policy.
* A packet the host sends out of a host endpoint: untracked egress policy first (as above).
* Traffic to the host (arrived through a host endpoint): normal ingress policy must allow it;
  with no such policy it is denied. From the host (leaving through one): normal egress policy,
  same rule. The failsafe ports (inbound: destination port to the host; outbound: destination
  port from the host) are always allowed, and skip untracked and pre-DNAT policy too; untracked
  policy also passes their replies (a source port of the other direction's list).
* Forwarded traffic: the ingress endpoint's ``applyOnForward`` ingress policy and the egress
  endpoint's ``applyOnForward`` egress policy must allow it; a side with no such policy allows.
  A pod's own policy (``policy.evaluator``) applies as well, when one end is a local pod.
* A normal policy that Passes, or applying policies with no Allow: deny (no Profiles follow).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from l3net.model import Resource
from l3net.model.hostendpoint_spec import hostendpoint_spec
from l3net.model.selectors import parse_calico
from policy.evaluator import (
    Packet,
    _by_ip,
    _calico_order,
    _calico_rule_matches,
    _calico_types,
    _Context,
    _ns_selector_matches,
    is_allowed,
)
from policy.model import HOST_ENDPOINT_KIND, NETWORK_SET_KINDS, calico_policy_name, namespace_labels, own_labels

__all__ = ["host_flow_allowed"]


def _selects(gnp: Resource, hep: Resource) -> bool:
    if gnp.kind != "GlobalNetworkPolicy":
        return False
    sel = gnp.spec.get("selector")
    if sel is not None and not parse_calico(sel).matches(own_labels(hep)):
        return False
    sa_sel = gnp.spec.get("serviceAccountSelector")
    if sa_sel is not None and not parse_calico(sa_sel).matches({}):
        return False  # a host endpoint has no ServiceAccount: its account's labels are none
    ns_sel = gnp.spec.get("namespaceSelector")
    return ns_sel is None or _ns_selector_matches(parse_calico(ns_sel), None)


def _kind_of(gnp: Resource) -> str:
    if gnp.spec.get("doNotTrack") is True:
        return "untracked"
    return "preDNAT" if gnp.spec.get("preDNAT") is True else "normal"


def _verdict(policies: Sequence[Resource], direction: str, packet: Packet, ctx: _Context,
             src_wl: Resource | None, dst_wl: Resource | None) -> str | None:
    """"Allow", "Deny", "Pass" or None (no rule decided) over ``policies`` in order."""
    for pol in policies:
        for rule in pol.spec.get("ingress" if direction == "Ingress" else "egress") or []:
            if not _calico_rule_matches(rule, packet, ctx, src_wl, dst_wl):
                continue
            action = rule.get("action")
            if action in ("Allow", "Deny"):
                return str(action)
            if action == "Pass":
                return "Pass"
    return None


def _port_in(packet: Packet, ports: Sequence[tuple[str, int]], source: bool = False) -> bool:
    port = packet.src_port if source else packet.dst_port
    return port is not None and (packet.protocol.lower(), port) in set(ports)


def host_flow_allowed(policies: Iterable[Resource], namespaces: Iterable[Resource], endpoints: Iterable[Resource],
                      host_endpoints: Iterable[Resource], packet: Packet, *, in_iface: str | None,
                      out_iface: str | None, failsafe_in: Sequence[tuple[str, int]] = (),
                      failsafe_out: Sequence[tuple[str, int]] = ()) -> bool:
    """True when this node lets the first packet of a connection through.

    ``in_iface`` None: sent by the host; ``out_iface`` None: to the host. ``host_endpoints``: this
    node's; ``endpoints``: this node's workloads plus the network sets and every host endpoint (the
    selector members).
    """
    everything, policies, namespaces = list(endpoints), list(policies), list(namespaces)
    ordered = sorted((p for p in policies if p.kind == "GlobalNetworkPolicy"),
                     key=lambda p: (_calico_order(p.spec), calico_policy_name(p)))
    wls = [w for w in everything if w.kind == "WorkloadEndpoint"]
    sets = tuple(w for w in everything if w.kind in NETWORK_SET_KINDS or w.kind == HOST_ENDPOINT_KIND)
    ctx = _Context(namespace_labels(namespaces), sets)
    src_wl, dst_wl = _by_ip(wls, packet.src), _by_ip(wls, packet.dst)
    by_iface = {hostendpoint_spec(h).interface_name: h for h in host_endpoints}
    h_in = by_iface.get(in_iface) if in_iface is not None else None
    h_out = by_iface.get(out_iface) if out_iface is not None else None
    to_host, from_host = out_iface is None, in_iface is None
    failsafe = (to_host and _port_in(packet, failsafe_in)) or (from_host and _port_in(packet, failsafe_out))
    # Untracked policy also lets the failsafe replies through: a source port of the other direction's list.
    raw_failsafe = failsafe or (to_host and _port_in(packet, failsafe_out, source=True)) or \
        (from_host and _port_in(packet, failsafe_in, source=True))

    def applying(hep: Resource, kind: str, direction: str, forward: bool = False) -> list[Resource]:
        return [p for p in ordered if _kind_of(p) == kind and direction in _calico_types(p.spec) and _selects(p, hep)
                and (not forward or p.spec.get("applyOnForward") is True)]

    def decide(pols: list[Resource], direction: str) -> str | None:
        return _verdict(pols, direction, packet, ctx, src_wl, dst_wl)

    early: list[tuple[Resource, str, str, bool]] = []  # (endpoint, kind, direction, failsafe), kernel order
    if h_in is not None:
        early += [(h_in, "untracked", "Ingress", raw_failsafe), (h_in, "preDNAT", "Ingress", failsafe)]
    if h_out is not None and in_iface is None:
        early.append((h_out, "untracked", "Egress", raw_failsafe))
    host_accepted = False
    for hep, kind, direction, skipped in early:
        if skipped:
            continue
        verdict = decide(applying(hep, kind, direction), direction)
        if verdict == "Deny":
            return False
        if verdict == "Allow":
            host_accepted = True
            break

    def normal(hep: Resource | None, direction: str, forward: bool) -> bool:
        # An untracked or pre-DNAT Allow skips the ingress side's normal policy only (as Felix does).
        if hep is None or (host_accepted and not (forward and direction == "Egress")):
            return True
        pols = applying(hep, "normal", direction, forward)
        if forward and not pols:
            return True  # forwarded traffic with no applyOnForward policy for this side: allowed
        return decide(pols, direction) == "Allow"

    if out_iface is None:
        return failsafe or normal(h_in, "Ingress", False)
    if in_iface is None:
        return failsafe or normal(h_out, "Egress", False)
    if (src_wl is not None or dst_wl is not None) and not is_allowed(policies, namespaces, everything, packet):
        return False
    return normal(h_in, "Ingress", True) and normal(h_out, "Egress", True)
