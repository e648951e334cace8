"""l3net.model.parity: for every kind l3net accepts, each spec field as implemented or refused.

Issue 19's rule: a field l3net accepts does what Calico does, or validation refuses it with
"l3net does not support this field". Never accepted and ignored. This module is the table of
that promise; the validators are where it is kept (``unsupported`` checks), and
``tests/unit/test_model_parity.py`` walks every field of every kind's schema and proves each is
either here as implemented (naming the module that reads it) or refused by validation.

An implemented entry covers the field and everything under it (a selector object, a list of
rules read as a whole by its consumer); a refused entry names a value validation must refuse
(``sample``) and the default it still accepts. Paths are relative to ``spec``; ``[]`` stands for
any item of a list. ``docs/calico-parity.md`` is rendered from this table (:func:`render_markdown`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from l3net.model.validate.felix_configuration import NOOP_VALUES as _FELIX_NOOP
from l3net.model.validate.felix_configuration import REFUSED_FIELDS as _FELIX_REFUSED

__all__ = ["PARITY", "FieldParity", "implemented", "refused", "render_markdown"]

_NO_DEFAULT = object()


@dataclass(frozen=True)
class FieldParity:
    """One spec field: ``implemented`` by ``consumer`` (a module), or ``refused`` unless at its default."""

    status: Literal["implemented", "refused"]
    calico: str  # what Calico does with it
    consumer: str = ""  # implemented: the module that reads it (its source names the field)
    token: str = ""  # the name the consumer's source quotes, when not the path's last part
    note: str = ""  # implemented: where l3net differs; refused: why
    sample: Any = None  # refused: a well-formed value validation refuses
    default: Any = _NO_DEFAULT  # refused: the value still accepted (Calico's default)

    def name(self, path: str) -> str:
        return self.token or path.rsplit(".", 1)[-1].removesuffix("[]")


def implemented(consumer: str, calico: str, note: str = "", token: str = "") -> FieldParity:
    return FieldParity("implemented", calico, consumer=consumer, note=note, token=token)


def refused(sample: Any, calico: str, note: str, default: Any = _NO_DEFAULT) -> FieldParity:
    return FieldParity("refused", calico, note=note, sample=sample, default=default)


_SA_NOTE = ("names match the pod's serviceAccountName; the selector matches the ServiceAccount's labels "
            "(and projectcalico.org/name, its name), which the kube-controller copies onto the endpoint under "
            "the pcsa. prefix; selects pods only, never network sets")


def _calico_rules(direction: str) -> dict[str, FieldParity]:
    """The fields of a Calico rule list (``ingress`` or ``egress``) of a (Global)NetworkPolicy."""
    c, sel = "policy.compiler", "policy.calico"
    out = {
        f"{direction}[].action": implemented(c, "Allow, Deny, Log or Pass the packet"),
        f"{direction}[].protocol": implemented(c, "match the IP protocol (name or number)"),
        f"{direction}[].notProtocol": implemented(c, "match any other protocol"),
        f"{direction}[].icmp": implemented(c, "match ICMP type and code"),
    }
    for side in ("source", "destination"):
        p = f"{direction}[].{side}"
        out |= {
            f"{p}.nets": implemented(c, f"match the {side} address in these CIDRs"),
            f"{p}.notNets": implemented(c, f"match the {side} address outside these CIDRs"),
            f"{p}.selector": implemented(sel, f"match {side} endpoints and network sets by labels",
                                         note="in a namespaced NetworkPolicy, those of its namespace unless "
                                              "namespaceSelector is set"),
            f"{p}.notSelector": implemented(c, f"exclude {side} endpoints and network sets by labels"),
            f"{p}.namespaceSelector": implemented(sel, f"match {side} endpoints by their namespace's labels",
                                                  note="scopes selector to the endpoints and NetworkSets of "
                                                       "matching namespaces; global() to GlobalNetworkSets"),
            f"{p}.ports": implemented(c, f"match {side} ports (numbers, ranges, named ports)"),
            f"{p}.notPorts": implemented(c, f"exclude {side} ports"),
            f"{p}.serviceAccounts": implemented(sel, f"match {side} pods by ServiceAccount name or labels",
                                                note=_SA_NOTE),
            f"{p}.services": refused({"name": "web", "namespace": "default"},
                                     f"match the {side} endpoints of a Kubernetes Service",
                                     "policy does not resolve Services to their endpoints", default={}),
        }
    return out


def _filter_rules(direction: str) -> dict[str, FieldParity]:
    b = "bgp.policy"
    return {
        f"{direction}[].cidr": implemented(b, "the prefix the rule compares with"),
        f"{direction}[].matchOperator": implemented(b, "Equal, NotEqual, In or NotIn against cidr"),
        f"{direction}[].prefixLength": implemented(b, "bounds on the route's prefix length"),
        f"{direction}[].action": implemented(b, "Accept or Reject the route"),
    }


_F = "felix.felixconfig"
_RESTART = "read at start: a change is logged as needing a restart"
_LIVE = "live: a change applies without a restart"

_HEP = "policy.host_endpoints"
_TIER = ("l3net has Calico's default tier only (its policies run before the Kubernetes NetworkPolicies, "
         "as if in a tier ahead of theirs)")
_SERVICES = ("read from the BGPConfiguration named default only (refused in node.<name>); no kernel route "
             "for service prefixes, as in Calico")
_NETSET_V6 = "IPv6 nets are accepted and left out of the IPv4-only policy sets, like a rule's IPv6 nets"

PARITY: dict[str, dict[str, FieldParity]] = {
    "IPPool": {
        "cidr": implemented("felix.calc", "the pool's addresses"),
        "blockSize": implemented("l3net.ipam.pools", "size of the per-node blocks"),
        "disabled": implemented("l3net.ipam.pools", "no new allocations; running pods keep their addresses"),
        "natOutgoing": implemented("felix.calc", "masquerade pod traffic to destinations outside every pool",
                                   note="IPv4 pools only: true on an IPv6 pool is refused; applied by the "
                                        "policy side (policy.nat), so not with policy_enabled=false"),
        "nodeSelector": implemented("l3net.ipam.pools", "which nodes allocate from the pool"),
        "namespaceSelector": implemented("l3net.ipam.pools", "which namespaces' pods allocate from the pool"),
        "disableBGPExport": implemented("felix.calc", "do not advertise the pool's blocks over BGP"),
        "allowedUses": refused(["LoadBalancer"], "what the pool's addresses are for: Workload, Tunnel, LoadBalancer",
                               "pools serve workloads only (Tunnel is accepted: l3net allocates no tunnel "
                               "addresses)", default=["Workload", "Tunnel"]),
        "assignmentMode": refused("Manual", "Automatic: any pod may draw from the pool; Manual: only pods "
                                  "that name it", "every pool is chosen automatically", default="Automatic"),
        "ipipMode": refused("Always", "IP-in-IP encapsulation between nodes",
                            "l3net routes natively: only Never", default="Never"),
        "vxlanMode": refused("Always", "VXLAN encapsulation between nodes",
                             "l3net routes natively: only Never", default="Never"),
    },
    "IPReservation": {
        "reservedCIDRs": implemented("l3net.ipam.reservations", "addresses IPAM never assigns automatically",
                                     note="an address asked for by name (ipAddrs) is still given, as in Calico"),
    },
    "FelixConfiguration": {
        "logSeverityScreen": implemented(_F, "the agent's log level (stdout)",
                                         note=f"{_LIVE}; Trace is logged as Debug, Fatal as Critical"),
        "routeRefreshInterval": implemented(_F, "how often routes are re-read to heal drift",
                                            note=f"{_LIVE}; heals routes, iptables and ipsets on one schedule; "
                                                 "0 (off) is refused"),
        "healthEnabled": implemented(_F, "serve the health endpoints", note=_RESTART),
        "healthHost": implemented(_F, "bind address of the health endpoints", note=f"{_RESTART}; an IP address"),
        "healthPort": implemented(_F, "port of the health endpoints", note=_RESTART),
        "prometheusMetricsEnabled": implemented(_F, "serve Prometheus metrics",
                                                note=f"{_RESTART}; l3net's default is on"),
        "prometheusMetricsHost": implemented(_F, "bind address of the metrics endpoint",
                                             note=f"{_RESTART}; an IP address"),
        "prometheusMetricsPort": implemented(_F, "port of the metrics endpoint", note=_RESTART),
        "defaultEndpointToHostAction": implemented(_F, "Drop, Accept or Return workload traffic to the host",
                                                   note=_LIVE),
        "failsafeInboundHostPorts": implemented(_F, "ports always open to the host through its host endpoints",
                                                note=(f"{_LIVE}; they open the host to workloads too only with "
                                                      "the agent's workload_to_host_failsafe")),
        "failsafeInboundHostPorts[].net": refused("10.0.0.0/8", "open the failsafe port from these addresses only",
                                                  "failsafe ports apply from every address"),
        "failsafeOutboundHostPorts": implemented(_F, "destination ports the host may always reach through its "
                                                     "host endpoints", note=_LIVE),
        "failsafeOutboundHostPorts[].net": refused("10.0.0.0/8", "open the failsafe port to these addresses only",
                                                   "failsafe ports apply to every address"),
        "iptablesBackend": implemented(_F, "Legacy, NFT or Auto iptables", note=_RESTART),
        "reportingTTL": implemented(_F, "TTL of the agent's status report",
                                    note=f"{_RESTART}; the lease of the status key, refreshed at a third of it"),
        **{name: refused(True if name not in _FELIX_NOOP else "on", "a Felix setting (Calico's FelixConfiguration "
                         "reference)", why, **({"default": _FELIX_NOOP[name]} if name in _FELIX_NOOP else {}))
           for name, why in _FELIX_REFUSED.items()},
    },
    "Node": {
        "bgp.ipv4Address": implemented("bgp.view", "the node's IPv4 address (and subnet) for BGP"),
        "bgp.ipv6Address": implemented("bgp.view", "the node's IPv6 address for BGP"),
        "bgp.asNumber": implemented("bgp.view", "the node's own AS number"),
        "bgp.routeReflectorClusterID": implemented("bgp.view", "makes the node a route reflector"),
        "addresses": refused([{"address": "10.0.0.1/24", "type": "CalicoNodeIP"}],
                             "the node's addresses, written by calico-node", "the node's addresses are "
                             "spec.bgp.ipv4Address and ipv6Address", default=[]),
        "orchRefs": refused([{"nodeName": "n1", "orchestrator": "k8s"}], "the orchestrator's name for the node",
                            "a node is named by metadata.name", default=[]),
    },
    "BGPConfiguration": {
        "nodeToNodeMeshEnabled": implemented("bgp.view", "full mesh between nodes"),
        "asNumber": implemented("bgp.view", "the cluster's default AS number"),
        "listenPort": implemented("bgp.view", "BGP listen port"),
        "logSeverityScreen": implemented("bgp.view", "BGP daemon log level"),
        "keepaliveTime": implemented("bgp.view", "BGP keepalive interval",
                                     note="BIRD engine: as set; ExaBGP (nodes and the exabgp engine): whole "
                                          "seconds, at least 1, through bgp.exabgp_run; below the negotiated "
                                          "hold time, else hold/3"),
        "holdTime": implemented("bgp.view", "BGP hold time"),
        "gracefulRestart": implemented("bgp.view", "graceful restart capability"),
        "restartTime": implemented("bgp.view", "graceful restart time"),
        "nodeMeshPassword": implemented("bgp.view", "MD5 password of the mesh sessions"),
        "communities": implemented("bgp.view", "named BGP communities"),
        "prefixAdvertisements": implemented("bgp.view", "communities attached to advertised prefixes"),
        "serviceClusterIPs": implemented("felix.services", "advertise the cluster's Service CIDRs",
                                         note=_SERVICES),
        "serviceExternalIPs": implemented("felix.services", "advertise Services' external IPs",
                                          note=_SERVICES),
        "serviceLoadBalancerIPs": implemented("felix.services", "advertise Services' LoadBalancer IPs",
                                              note=_SERVICES),
        "maxPrefixes": implemented("bgp.view", "(l3net) cap on prefixes accepted from one peer"),
        "bfd": implemented("bgp.view", "(l3net) BFD for the BGP sessions"),
    },
    "BGPPeer": {
        "node": implemented("bgp.view", "the one node that peers"),
        "nodeSelector": implemented("bgp.view", "the nodes that peer"),
        "peerIP": implemented("bgp.view", "the peer's address (and port)"),
        "peerSelector": implemented("bgp.view", "peer with the selected nodes"),
        "asNumber": implemented("bgp.view", "the peer's AS number"),
        "keepaliveTime": implemented("bgp.view", "BGP keepalive interval for this peer",
                                     note="as in BGPConfiguration"),
        "holdTime": implemented("bgp.view", "BGP hold time for this peer"),
        "password": implemented("bgp.view", "MD5 password"),
        "sourceAddress": implemented("bgp.view", "UseNodeIP binds the session to the node's address; None lets the "
                                     "kernel choose", note=(
            "None: ExaBGP gets `local-address auto` (it connects unbound, the kernel picks the source by route, "
            "and `next-hop self` is that source); the agent's BFD is unbound too. A passive session (the higher "
            "address of a node pair) keeps the node's address: it never connects, and ExaBGP listens on the "
            "node's addresses only. BIRD engine: no local address, as Calico; a peer with BFD on a multihop "
            "session is left out of the configuration with a reason (BIRD needs a local address for multihop "
            "BFD)")),
        "keepOriginalNextHop": implemented("bgp.view", "keep the route's original next hop when advertising to this "
                                           "peer (Calico writes `next hop keep` for eBGP peers only)", note=(
            "BIRD engine: `next hop keep` for an eBGP peer, as Calico; to an iBGP peer BIRD keeps a BGP route's "
            "next hop anyway. ExaBGP (nodes and the exabgp engine): nothing to change. A node sends only its own "
            "blocks and services, whose original next hop is the node itself (l3net never re-advertises routes "
            "it learned, where Calico's node re-exports pool routes), and the exabgp engine reflects to iBGP "
            "peers only, keeping the next hop, and sends nothing to eBGP peers")),
        "maxRestartTime": implemented("bgp.view", "graceful restart time granted to the peer"),
        "ttlSecurity": implemented("bgp.view", "GTSM: accept only packets within this many hops",
                                   note="ExaBGP: `incoming-ttl 256-N` (the lowest TTL accepted; it then sends 255). "
                                        "BIRD engine: `ttl security on; multihop N`. N > 1 admits a routed "
                                        "eBGP peer without ebgpMultihop"),
        "ebgpMultihop": implemented("bgp.view", "(l3net) outgoing TTL to a peer not on a node subnet", note=(
            "eBGP peers only (iBGP is multihop by nature). ExaBGP: `outgoing-ttl N`. BIRD engine: `multihop N` "
            "(1 writes nothing: BIRD's direct eBGP session sends TTL 1); refused with ttlSecurity (GTSM sends "
            "TTL 255; ttlSecurity N already admits a peer N hops away); on the BIRD engine a peer with BFD and "
            "sourceAddress None is left out with a reason (BIRD needs a local address for multihop BFD)")),
        "maxPrefixes": implemented("bgp.view", "(l3net) cap on prefixes accepted from this peer"),
        "filters": implemented("bgp.view", "BGPFilters applied to this peer, in order"),
        "bfd": implemented("bgp.view", "(l3net) BFD for this peer"),
    },
    "BGPFilter": {**_filter_rules("exportV4"), **_filter_rules("importV4"), **_filter_rules("exportV6"),
                  **_filter_rules("importV6")},
    "WorkloadEndpoint": {
        "node": implemented("felix.calc", "the node that hosts the workload"),
        "orchestrator": implemented("policy.model", "the orchestrator (k8s); a label selectors can match"),
        "workload": refused("vm-1", "the workload's name for non-Kubernetes orchestrators",
                            "only Kubernetes pods are workloads", default=""),
        "pod": implemented("l3net.kube.controller", "the pod's name"),
        "endpoint": implemented("l3net.cni.plugin", "the pod-side interface name"),
        "containerID": implemented("l3net.ipam.report", "the container, for IPAM handles"),
        "ipNetworks": implemented("felix.calc", "the workload's addresses (routed, policed)"),
        "interfaceName": implemented("felix.calc", "the host-side interface"),
        "mac": implemented("l3net.cni.plugin", "the pod-side MAC (recorded)"),
        "ports": implemented("policy.model", "named ports for policy"),
        "profiles": refused(["kns.default"], "profiles whose rules and labels apply to the workload",
                            "namespace labels come from Namespace resources", default=[]),
        "serviceAccountName": implemented("l3net.kube.controller", "the pod's ServiceAccount"),
    },
    "Namespace": {},
    "NetworkPolicy": {
        "podSelector": implemented("policy.compiler", "(Kubernetes) the pods the policy applies to"),
        "ingress": implemented("policy.compiler", "(Kubernetes) allowed sources and ports"),
        "egress": implemented("policy.compiler", "(Kubernetes) allowed destinations and ports"),
        "policyTypes": implemented("policy.model", "(Kubernetes) the directions the policy isolates"),
    },
    "GlobalNetworkPolicy": {
        "order": implemented("policy.model", "evaluation order"),
        "selector": implemented("policy.calico", "the endpoints the policy applies to"),
        "namespaceSelector": implemented("policy.calico", "restrict to endpoints of selected namespaces",
                                         note="global() selects non-namespaced endpoints only (host "
                                              "endpoints), so it applies to no workload"),
        "types": implemented("policy.model", "the directions the policy applies to"),
        **_calico_rules("ingress"),
        **_calico_rules("egress"),
        "doNotTrack": implemented(_HEP, "untracked policy: rules in the raw table, before connection tracking, "
                                        "for host endpoints; Allow skips connection tracking and later policy",
                                  note="needs applyOnForward; never applies to workloads"),
        "preDNAT": implemented(_HEP, "pre-DNAT policy: ingress rules in the mangle table, before DNAT, for "
                                     "host endpoints; Allow skips the host endpoint's normal policy",
                               note="needs applyOnForward; Ingress only"),
        "applyOnForward": implemented(_HEP, "the host endpoint's policy also applies to traffic forwarded through "
                                            "its interface (allowed when no such policy applies)"),
        "serviceAccountSelector": implemented("policy.calico", "restrict the policy to pods of matching "
                                                                 "ServiceAccounts", note=_SA_NOTE),
        "tier": refused("security", "the tier the policy belongs to: tiers run in order, Pass goes to the next",
                        _TIER, default="default"),
    },
    "CalicoNetworkPolicy": {
        "order": implemented("policy.model", "evaluation order, shared with GlobalNetworkPolicies",
                             note="ties broken by name, <namespace>/<name> for this kind, as Felix sorts"),
        "selector": implemented("policy.calico", "the endpoints of the policy's namespace it applies to"),
        "serviceAccountSelector": implemented("policy.calico", "restrict the policy to pods of matching "
                                                                 "ServiceAccounts", note=_SA_NOTE),
        "tier": refused("security", "the tier the policy belongs to: tiers run in order, Pass goes to the next",
                        _TIER, default="default"),
        "types": implemented("policy.model", "the directions the policy applies to"),
        **_calico_rules("ingress"),
        **_calico_rules("egress"),
    },
    "NetworkSet": {
        "nets": implemented("policy.model", "the set's CIDRs: a policy rule's selector that matches the set's "
                                            "labels matches these addresses",
                            note=_NETSET_V6 + "; selected by a GlobalNetworkPolicy rule's selector with no "
                                              "namespaceSelector, or with one that matches the set's namespace"),
    },
    "GlobalNetworkSet": {
        "nets": implemented("policy.model", "the set's CIDRs, cluster-wide: a GlobalNetworkPolicy rule's selector "
                                            "that matches the set's labels matches these addresses",
                            note=_NETSET_V6 + "; selected by a rule's selector with no namespaceSelector, or with "
                                              "namespaceSelector global()"),
    },
    "HostEndpoint": {
        "node": implemented(_HEP, "the node whose interface this is"),
        "interfaceName": implemented(_HEP, "the interface policed: traffic to and from the host through it, and "
                                           "forwarded through it with applyOnForward policy",
                                     note="one named interface: the all-interfaces endpoint '*' is refused"),
        "expectedIPs": implemented("policy.model", "the endpoint's addresses: a rule's selector that matches the "
                                                   "endpoint's labels matches them"),
        "profiles": refused(["p"], "Profiles whose rules and labels apply to the endpoint", "l3net has no Profile kind",
                            default=[]),
        "ports": refused([{"name": "web", "port": 80, "protocol": "TCP"}], "named ports on the endpoint",
                         "named ports are resolved on workloads only", default=[]),
    },
    "Service": {
        # The model folds clusterIP into clusterIPs (as the API server fills it in): the agent reads that list.
        "clusterIP": implemented("felix.services", "(Kubernetes) the Service's cluster IP; a /32 for a Local "
                                                   "Service inside serviceClusterIPs", token="clusterIPs"),
        "clusterIPs": implemented("felix.services", "(Kubernetes) the Service's cluster IPs, one per family"),
        "externalIPs": implemented("felix.services", "(Kubernetes) external IPs; a /32 for a Local Service inside "
                                                     "serviceExternalIPs"),
        "loadBalancerIPs": implemented("felix.services", "(Kubernetes status.loadBalancer.ingress[].ip) a /32 for a "
                                                         "Local Service inside serviceLoadBalancerIPs"),
        "externalTrafficPolicy": implemented("felix.services", "(Kubernetes) Local: only nodes with an endpoint "
                                                               "announce the Service's /32s"),
        "selector": implemented("felix.services", "(Kubernetes) the pods behind the Service, in its namespace"),
    },
}


# Two kinds are documents of kind NetworkPolicy; the table names them by apiVersion.
_TITLES = {"NetworkPolicy": "NetworkPolicy (networking.k8s.io/v1)",
           "CalicoNetworkPolicy": "NetworkPolicy (projectcalico.org/v3)"}


def render_markdown() -> str:
    """The table of docs/calico-parity.md: one row per field of every kind."""
    lines = ["| kind | field (under `spec`) | l3net | what Calico does |", "|---|---|---|---|"]
    for name, fields in PARITY.items():
        kind = _TITLES.get(name, name)
        if not fields:
            lines.append(f"| {kind} | (no spec fields) | - | - |")
        for path, f in fields.items():
            if f.status == "implemented":
                status = f"implemented (`{f.consumer}`)" + (f"; {f.note}" if f.note else "")
            else:
                shown = "any value" if f.default is _NO_DEFAULT else f"accepted only as `{_yaml(f.default)}`"
                status = f"**refused** ({shown}): {f.note}"
            lines.append(f"| {kind} | `{path}` | {status} | {f.calico} |")
    return "\n".join(lines) + "\n"


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    return str(value)
