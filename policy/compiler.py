"""policy.compiler: NetworkPolicy, Calico NetworkPolicy and GlobalNetworkPolicy -> iptables chains and ipsets.

Layout of the filter table (all our chains start with ``l3n-``; the kernel
chains get one hook rule each, inserted at the top):

* ``FORWARD -> l3n-FORWARD``: ``-i cali+`` jumps to ``l3n-from-wl-dispatch``,
  ``-o cali+`` to ``l3n-to-wl-dispatch``; a packet that comes back from both is
  accepted. Dispatch chains *goto* the endpoint chain of the interface, so an
  endpoint chain's RETURN means "allowed by this side"; the last dispatch rule
  drops: an interface that looks like a workload but is not known yet carries
  nothing (fail closed, so a new pod is isolated before its first packet).
  Past ``DISPATCH_SPLIT`` local interfaces each dispatch chain is a two-level tree
  (``-i cali9+ -g l3n-fd-cali9``, one sub-chain per name prefix, each ending in DROP too),
  so a pod that comes or goes rewrites one short sub-chain per direction.
* ``INPUT -> l3n-INPUT``: ``-i cali+`` jumps to ``l3n-wl-to-host``: workload-to-host
  traffic passes the workload's egress policy (``l3n-from-wl-dispatch``), then, when
  configured, the failsafe inbound ports are accepted, then Calico's
  ``DefaultEndpointToHostAction`` decides: ``Drop`` (the default: a pod cannot reach the
  node's own addresses, only replies to what the node opened), ``Accept``, or ``Return``
  (back to the host's own INPUT rules).
* ``OUTPUT -> l3n-OUTPUT``: host-to-local-workload traffic is allowed (kubelet
  probes, as Kubernetes requires).
* Host endpoints (this node's HostEndpoints, :mod:`policy.host_endpoints`): one rule per
  interface in ``l3n-INPUT``/``l3n-OUTPUT`` (host traffic) and, with ``applyOnForward``
  policy, in ``l3n-FORWARD`` before the workload accepts; untracked policy in the raw table
  and pre-DNAT policy in the mangle table. None of it exists while the node has no host endpoint.
* ``l3n-fw-<iface>`` (from workload, egress) starts with the anti-spoofing
  check (the source must be one of the workload's own addresses; it comes
  before the conntrack accept so a forged source cannot ride another pod's
  flow), then ESTABLISHED/RELATED accept, INVALID drop, then the policies.
* ``l3n-tw-<iface>`` (to workload, ingress): conntrack first, then the policies.
* Policies come in two tiers, as in Calico (see :mod:`policy.evaluator`):
  Calico's policies first (GlobalNetworkPolicies and namespaced ``projectcalico.org/v3``
  NetworkPolicies together, by ``order``, ties by name; what their selectors mean is
  :mod:`policy.calico`): clear the accept and pass marks,
  jump to each ``l3n-gi-*``/``l3n-go-*`` chain unless a previous one passed,
  RETURN as soon as one set the accept mark, DROP at the end of the tier
  unless one passed. Then the Kubernetes NetworkPolicies, a union (any allow
  allows, order is moot), so mostly set lookups rather than a walk: every
  (peer, port) pair of their rules that a set member can say is an *atom*
  (peer: a selector set or an ipBlock without ``except``, or every address as
  ``0.0.0.0/1`` + ``128.0.0.0/1``; port: a number or an ``endPort`` range of at
  most ``MAX_ATOM_RANGE`` ports, or none = every protocol and port). The atoms
  of all the endpoint's policies for a direction fill two sets, a ``hash:net,port``
  ``l3nk:`` set of ``net,proto:port`` (matched ``src,dst`` for ingress, ``dst,dst``
  for egress) and a ``hash:net`` ``l3nu:`` set of nets allowed every port; a hit
  in either RETURNs. The rest (named ports, ipBlocks with ``except``, a bare
  protocol, wide ranges) stays in one ``l3n-pi-*``/``l3n-po-*`` chain per
  policy, jumped to only when it is not empty, with RETURN as soon as one set
  the accept mark; DROP at the end. A direction no policy selects just returns
  (allowed). So a new connection's first packet costs two lookups however many
  policies select its pods (bench/conn_rate).
* raw ``PREROUTING -> l3n-PREROUTING``: a strict reverse-path check for packets
  from ``cali+`` (a second anti-spoofing layer, and it acts before conntrack).

Every rule carries ``-m comment --comment "l3n:<hash>"``; the hash chains over
the previous rule's hash (seeded with the chain name, Felix style), so the
driver diffs chains by comparing hash lists and never parses rule bodies.

Selector members go into ``hash:net`` ipsets of member addresses (for a GlobalNetworkPolicy rule's
selector, the nets of matching NetworkSets and GlobalNetworkSets too, as in Calico; ``all_endpoints``
carries the sets; Kubernetes peers select pods only); named ports
into ``hash:ip,port`` sets of ``ip,proto:port``. Set and chain names are
deterministic hashes of their canonical meaning, so a rule never mentions a
member: a label change only changes set members, never a policy chain. The
Kubernetes tier's sets are named by their atoms, so endpoints with the same
policies share them; their members are (selector members x ports), so a peer's
label change moves only members there too, patched per atom (a pod that comes or
goes costs one member per atom, not a rebuild).

Speed (:class:`PolicyCompiler`): a policy's chains are compiled once per
content and reused while the policy is unchanged; set members are kept by a
:class:`policy.selectors.SelectorIndex` that re-evaluates only the endpoints
that changed; endpoint chains are re-rendered only when their interface,
addresses or list of applying policies changed. The output equals a fresh
compilation of the same inputs (a unit test checks this on generated change
sequences).

Invalid content is treated as absent, never raised: a policy whose spec cannot
be compiled is logged and skipped (the valid ones stay enforced); a selector
that cannot be parsed matches nothing.

IPv4 only: nothing is written to ip6tables, so a workload's IPv6 traffic is NOT
policed. Each local workload with an IPv6 address is logged once (a warning) and
listed in ``PolicyProgram.ipv6_unpoliced`` (gauge
``l3net_policy_ipv6_unpoliced_workloads``), so the gap is visible, not silent.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from l3net.constants import CHAIN_PREFIX, IPSET_PREFIX, WORKLOAD_IFACE_PREFIX
from l3net.model import Resource
from l3net.model.calico_selector import LabelOp
from l3net.model.selectors import (
    Nothing,
    Selector,
    all_of,
    canonical_string,
    parse_calico,
    parse_label_selector,
    with_key_prefix,
)
from policy.calico import PODS_ONLY, entity_selector, policy_applies, policy_namespace
from policy.host_endpoints import HostEndpointRender, local_host_endpoints, render_host_endpoints
from policy.model import (
    CALICO_NAMESPACE_LABEL,
    HOST_ENDPOINT_KIND,
    NAMESPACE_LABEL_PREFIX,
    NETWORK_SET_KINDS,
    POLICY_KINDS,
    calico_policy_name,
    endpoint_labels,
    gnp_order,
    gnp_types,
    host_endpoint_ips,
    is_host_only,
    namespace_labels,
    network_set_labels,
    network_set_nets,
    own_labels,
    policy_types,
    workload_ips,
    workload_ports,
)
from policy.rules import (
    ACCEPT_MARK,
    FAILSAFE_PROTOCOLS,
    MAX_CHAIN_LEN,
    PASS_MARK,
    chain_name,
    digest,
    failsafe_rules,
    hash_rules,
    multiport_chunks,
)
from policy.rules import CLEAR_ACCEPT as _CLEAR_MARK
from policy.rules import CLEAR_BOTH as _CLEAR_BOTH
from policy.rules import CT_ACCEPT as _CT_ACCEPT
from policy.rules import CT_INVALID as _CT_INVALID
from policy.rules import RETURN_IF_ACCEPTED as _RETURN_IF_MARK
from policy.rules import RETURN_IF_PASSED as _RETURN_IF_PASS
from policy.rules import SET_ACCEPT as _SET_MARK
from policy.rules import SET_PASS as _SET_PASS
from policy.rules import UNLESS_PASSED as _UNLESS_PASSED
from policy.selectors import SelectorIndex

_log = logging.getLogger(__name__)

__all__ = ["ACCEPT_MARK", "CHAIN_FORWARD", "CHAIN_FROM_DISPATCH", "CHAIN_INPUT", "CHAIN_OUTPUT",
           "CHAIN_PREROUTING", "CHAIN_TO_DISPATCH", "CHAIN_WL_TO_HOST",
           "ENDPOINT_TO_HOST_ACTIONS", "FAILSAFE_PROTOCOLS", "MAX_CHAIN_LEN", "MAX_IPSET_LEN", "PASS_MARK",
           "PolicyCompiler", "PolicyProgram", "compile_policy", "hash_rules", "wl_to_host_rules"]

MAX_IPSET_LEN = 31

CHAIN_FORWARD = f"{CHAIN_PREFIX}FORWARD"
CHAIN_INPUT = f"{CHAIN_PREFIX}INPUT"
CHAIN_OUTPUT = f"{CHAIN_PREFIX}OUTPUT"
CHAIN_PREROUTING = f"{CHAIN_PREFIX}PREROUTING"
CHAIN_FROM_DISPATCH = f"{CHAIN_PREFIX}from-wl-dispatch"
CHAIN_TO_DISPATCH = f"{CHAIN_PREFIX}to-wl-dispatch"
CHAIN_WL_TO_HOST = f"{CHAIN_PREFIX}wl-to-host"
# Calico's DefaultEndpointToHostAction values and the iptables target each becomes.
ENDPOINT_TO_HOST_ACTIONS = {"Drop": "DROP", "Accept": "ACCEPT", "Return": "RETURN"}
_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp", 136: "udplite"}
_PORT_PROTOS = ("tcp", "udp", "sctp", "udplite")

SetSpec = tuple[Any, ...]  # ("sel", Selector) | ("net", frozenset[str]) | ("named", proto, name)


class FrozenDict(dict[Any, Any]):
    """A dict that refuses changes and hashes by content: a program is a value the loop compares and shares.

    A dict subclass (not a bare Mapping) so it still equals, prints and JSON-encodes like the plain dicts
    tests and tools already hold.
    """

    __slots__ = ()

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))  # copy/pickle must not go through the refused __setitem__

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("FrozenDict is immutable: build a new one (dataclasses.replace on the program)")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]


Tables = Mapping[str, Mapping[str, Sequence[str]]]


def _freeze_tables(tables: Tables) -> FrozenDict:
    return FrozenDict((t, FrozenDict((c, tuple(rules)) for c, rules in chains.items())) for t, chains in tables.items())


@dataclass(frozen=True)
class PolicyProgram:
    """The policy dataplane of one node, as data; immutable and hashable (a slice of ``DesiredState``).

    ``chains[table][chain]`` and ``hooks[table][kernel_chain]`` are rule bodies
    (iptables-restore syntax after ``-A <chain>``), each already carrying its
    ``l3n:`` hash comment; ``ipsets[name] = (type, members)``. ``policies`` counts
    the policies that compiled (both kinds); ``global_policies`` the GNPs among
    them. ``compile_seconds`` and ``policies_recompiled`` describe how it was made
    and take no part in equality. Plain dicts and lists may be passed in: they are
    frozen at construction (FrozenDict of tuples).
    """

    chains: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=FrozenDict)
    hooks: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=FrozenDict)
    ipsets: Mapping[str, tuple[str, frozenset[str]]] = field(default_factory=FrozenDict)
    policies: int = 0
    global_policies: int = 0
    compile_seconds: float = field(default=0.0, compare=False)
    policies_recompiled: int = field(default=0, compare=False)
    ipv6_unpoliced: tuple[str, ...] = ()  # "<namespace>/<name>" of local workloads with IPv6 addresses, sorted
    # Set by the agent's builder (felix.quarantine): the objects compiled in, by ref, at the content used.
    applied_objects: Mapping[str, Any] = field(default_factory=FrozenDict, compare=False)

    def __post_init__(self) -> None:
        # object.__setattr__: the documented way to normalise a frozen dataclass's fields at construction
        object.__setattr__(self, "chains", _freeze_tables(self.chains))
        object.__setattr__(self, "hooks", _freeze_tables(self.hooks))
        object.__setattr__(self, "ipsets", FrozenDict((n, (kind, frozenset(members)))
                                                      for n, (kind, members) in self.ipsets.items()))
        object.__setattr__(self, "ipv6_unpoliced", tuple(self.ipv6_unpoliced))
        object.__setattr__(self, "applied_objects", FrozenDict(self.applied_objects))

    @property
    def rule_count(self) -> int:
        return sum(len(rules) for table in self.chains.values() for rules in table.values())

    @property
    def ipset_members(self) -> int:
        return sum(len(members) for _, members in self.ipsets.values())

    def metrics(self) -> dict[str, float]:
        """Gauges the agent exports (names in the policy section of docs/metrics.md)."""
        return {"l3net_policy_active": self.policies, "l3net_policy_global_active": self.global_policies,
                "l3net_policy_rules": self.rule_count,
                "l3net_policy_chains": sum(len(t) for t in self.chains.values()),
                "l3net_policy_ipsets": len(self.ipsets), "l3net_policy_ipset_members": self.ipset_members,
                "l3net_policy_compile_seconds": self.compile_seconds,
                "l3net_policy_recompiled": self.policies_recompiled,
                "l3net_policy_ipv6_unpoliced_workloads": len(self.ipv6_unpoliced)}


def _ipset_name(tag: str, key: str) -> str:
    base = f"{IPSET_PREFIX}{tag}:"
    return base + digest(f"{tag}:{key}", MAX_IPSET_LEN - len(base))


def _net(text: str) -> str:
    """A network in ipset's own spelling: a host network is written without ``/32``."""
    net = ipaddress.ip_network(str(text), strict=False)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _set_nets(nets: Iterable[Any]) -> frozenset[str]:
    """Members of a ``hash:net`` set: ``hash:net`` refuses a /0, so it becomes its two /1 halves (as Calico does)."""
    out: set[str] = set()
    for text in nets:
        out.update(_spelled(str(text)))
    return frozenset(out)


@functools.lru_cache(maxsize=1 << 16)
def _spelled(text: str) -> tuple[str, ...]:
    """One network's ``hash:net`` members, in ipset's spelling (cached: endpoint addresses recur in every
    recompile of a selector set they belong to; a bad address raises, and is not cached)."""
    net = ipaddress.ip_network(text, strict=False)
    if net.prefixlen == 0:
        return tuple(str(half) for half in net.subnets(prefixlen_diff=1))
    return (_net(text),)


def _v4(nets: Iterable[Any]) -> list[str]:
    return [str(n) for n in nets if ipaddress.ip_network(str(n), strict=False).version == 4]


# -- per-policy compilation (pure: depends on the policy only) ----------------------------------------------
class _Refs:
    """Collects the sets one policy's rules reference."""

    def __init__(self) -> None:
        self.sets: dict[str, SetSpec] = {}

    def selector_set(self, sel: Selector) -> str:
        name = _ipset_name("s", canonical_string(sel))
        self.sets[name] = ("sel", sel)
        return name

    def net_set(self, tag: str, nets: Iterable[str]) -> str:
        members = _set_nets(nets)
        name = _ipset_name(tag, ",".join(sorted(members)))
        self.sets[name] = ("net", members)
        return name

    def named_port_set(self, protocol: str, port_name: str) -> str:
        name = _ipset_name("n", f"{protocol}:{port_name}")
        self.sets[name] = ("named", protocol, port_name)
        return name


_PODS_ONLY = PODS_ONLY


def _np_peer_selector(pol_ns: str, peer: Mapping[str, Any]) -> Selector:
    """A NetworkPolicy peer's pod/namespace selectors as one selector over endpoint labels."""
    pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
    psel = parse_label_selector(pod_sel, where="podSelector") if pod_sel is not None else None
    if ns_sel is None:
        nsel: Selector = LabelOp(CALICO_NAMESPACE_LABEL, "==", (pol_ns,))
    else:
        nsel = with_key_prefix(parse_label_selector(ns_sel, where="namespaceSelector"), NAMESPACE_LABEL_PREFIX)
    # Pods only, as Calico converts a Kubernetes peer: network sets share the selector sets' index
    # and carry no orchestrator label.
    return all_of(_PODS_ONLY, nsel, psel)


# An atom of the Kubernetes tier: (peer kind, peer, protocol, port). Peer kind "s" is a selector set's name,
# "n" a network in ipset's spelling; protocol "" and port 0 stand for every protocol and port.
Atom = tuple[str, str, str, int]
_ANY_PEER = tuple(("n", half) for half in sorted(_set_nets(["0.0.0.0/0"])))
DISPATCH_SPLIT = 32  # more local interfaces than this: the dispatch chains become a tree (see _render_dispatch)
MAX_ATOM_RANGE = 16  # an endPort range of at most this many ports becomes set members; a wider one stays a rule


def _np_peer(refs: _Refs, peer: Mapping[str, Any], pol_ns: str,
             side: str) -> tuple[tuple[tuple[str, str], ...] | None, str] | None:
    """One peer on ``side`` (``src``/``dst``): (its set-lookup peers or None, its match fragment); None when it
    can match nothing. A peer that a ``hash:net`` member cannot say (an ipBlock with ``except``) has no
    set-lookup form."""
    flag = "-s" if side == "src" else "-d"
    block = peer.get("ipBlock")
    if block is not None:
        cidr = ipaddress.ip_network(block["cidr"], strict=False)
        if cidr.version != 4:
            return None  # an IPv6 block matches no IPv4 packet
        frag = f"{flag} {cidr}"
        excepts = _v4(block.get("except") or [])
        if excepts:
            return None, frag + f" -m set ! --match-set {refs.net_set('e', excepts)} {side}"
        return tuple(("n", n) for n in sorted(_set_nets([cidr]))), frag
    if peer.get("podSelector") is None and peer.get("namespaceSelector") is None:
        return None  # validation refuses an empty peer; if one gets here it matches nothing
    name = refs.selector_set(_np_peer_selector(pol_ns, peer))
    return (("s", name),), f"-m set --match-set {name} {side}"


def _np_port(refs: _Refs, port: Mapping[str, Any]) -> tuple[tuple[tuple[str, int], ...] | None, str]:
    """One port entry: (its (protocol, port) set-lookup pairs or None, its match fragment). Only numbers
    (and narrow ranges) have the set-lookup form: a name is resolved per destination, a bare protocol or a
    wide range would be too many members."""
    proto = str(port.get("protocol") or "TCP").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"protocol {proto!r} is not TCP, UDP or SCTP")
    number = port.get("port")
    if number is None:
        return None, f"-p {proto}"
    if isinstance(number, bool):
        raise ValueError("port must be a number or a name")
    if isinstance(number, int):
        end = port.get("endPort")
        last = end if isinstance(end, int) and not isinstance(end, bool) and end > number else number
        rng = f"{number}:{last}" if last > number else str(number)
        pairs = tuple((proto, n) for n in range(number, last + 1)) \
            if number >= 1 and last <= 65535 and last - number < MAX_ATOM_RANGE else None
        return pairs, f"-p {proto} -m {proto} --dport {rng}"
    return None, f"-p {proto} -m set --match-set {refs.named_port_set(proto, str(number))} dst,dst"


def _np_rules(refs: _Refs, pol: Resource, direction: str) -> tuple[list[str], list[Atom]]:
    """One NetworkPolicy for one direction: (the rule bodies that set lookups cannot say, each setting the
    accept mark; the atoms that they can). A union: order is moot, so each (peer, port) pair of a rule goes
    to whichever form can hold it."""
    rules_key, peers_key, side = (("ingress", "from", "src") if direction == "Ingress" else ("egress", "to", "dst"))
    pol_ns = pol.namespace or ""
    out: list[str] = []
    atoms: list[Atom] = []
    for rule in pol.spec.get(rules_key) or []:
        peers = rule.get(peers_key) or []
        peer_parts = [(_ANY_PEER, "")] if not peers else [
            f for f in (_np_peer(refs, p, pol_ns, side) for p in peers) if f is not None]
        ports = rule.get("ports") or []
        port_parts: list[tuple[tuple[tuple[str, int], ...] | None, str]] = \
            [((("", 0),), "")] if not ports else [_np_port(refs, p) for p in ports]
        for peer_atoms, pf in peer_parts:
            for port_atoms, qf in port_parts:
                if peer_atoms is not None and port_atoms is not None:
                    atoms += [(kind, peer, proto, num) for kind, peer in peer_atoms for proto, num in port_atoms]
                else:
                    out.append(" ".join(x for x in (pf, qf, _SET_MARK) if x))
    return out, atoms


def _calico_proto(value: Any) -> str | None:
    """iptables' name for a Calico protocol; None for one that no IPv4 packet carries (ICMPv6)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _PROTO_NAMES.get(value, str(value)) if value != 58 else None
    text = str(value).lower()
    return None if text == "icmpv6" else text


def _port_text(p: Any) -> str | None:
    """A numeric port or range as iptables spells it; None for a named port."""
    if isinstance(p, int) and not isinstance(p, bool):
        return str(p)
    text = str(p)
    if text.isascii() and text.isdigit():
        return str(int(text))
    lo, sep, hi = text.partition(":")
    if sep and lo.isascii() and lo.isdigit() and hi.isascii() and hi.isdigit():
        # Re-serialised: iptables' multiport refuses a range whose ends are equal ("80:80").
        return str(int(lo)) if int(lo) == int(hi) else f"{int(lo)}:{int(hi)}"
    return None


def _entity_frags(refs: _Refs, entity: Mapping[str, Any], side: str, proto: str | None,
                  pol_ns: str | None = None) -> list[str] | None:
    """OR-alternatives of AND-ed matches for one side of a Calico rule; None when the side matches nothing.

    ``pol_ns``: the namespace of a Calico NetworkPolicy, which scopes the side's selectors (policy.calico).
    """
    flag, pflag = ("-s", "--sports") if side == "src" else ("-d", "--dports")
    base: list[str] = []
    nets = entity.get("nets")
    if nets:
        v4 = _v4(nets)
        if not v4:
            return None
        base.append(f"{flag} {ipaddress.ip_network(v4[0], strict=False)}" if len(v4) == 1 else
                    f"-m set --match-set {refs.net_set('a', v4)} {side}")
    not_nets = _v4(entity.get("notNets") or [])
    if not_nets:
        base.append(f"-m set ! --match-set {refs.net_set('x', not_nets)} {side}")
    sel = entity_selector(entity, pol_ns)  # selector, namespaceSelector, serviceAccounts
    if sel is not None:
        if isinstance(sel, Nothing):
            return None
        base.append(f"-m set --match-set {refs.selector_set(sel)} {side}")
    if entity.get("notSelector") is not None:
        nsel = parse_calico(entity["notSelector"], where="notSelector")
        if not isinstance(nsel, Nothing):  # "not nothing" is no constraint
            base.append(f"-m set ! --match-set {refs.selector_set(nsel)} {side}")
    dirs = f"{side},{side}"
    for p in entity.get("notPorts") or []:
        if _port_text(p) is None:
            if proto not in _PORT_PROTOS:
                raise ValueError("notPorts need protocol TCP, UDP, SCTP or UDPLite")
            base.append(f"-m set ! --match-set {refs.named_port_set(proto, str(p))} {dirs}")
    numeric_not = [t for t in (_port_text(p) for p in entity.get("notPorts") or []) if t is not None]
    for chunk in multiport_chunks(numeric_not):
        base.append(f"-m multiport ! {pflag} {chunk}")
    ports = entity.get("ports") or []
    if not ports:
        return [" ".join(base)]
    if proto not in _PORT_PROTOS:
        raise ValueError("ports need protocol TCP, UDP, SCTP or UDPLite")
    alts = [f"-m multiport {pflag} {chunk}"
            for chunk in multiport_chunks([t for t in (_port_text(p) for p in ports) if t is not None])]
    alts += [f"-m set --match-set {refs.named_port_set(proto, str(p))} {dirs}"
             for p in ports if _port_text(p) is None]
    head = " ".join(base)
    return [f"{head} {a}" if head else a for a in alts]


def wl_to_host_rules(action: str, failsafe: Sequence[tuple[str, int]]) -> list[str]:
    """Bodies of ``l3n-wl-to-host``: egress policy, failsafe ports, then the default action.

    ``failsafe`` is (protocol, port) pairs already parsed (``felix.config``); anything else
    is a programming error (ValueError), never rendered.
    """
    target = ENDPOINT_TO_HOST_ACTIONS.get(action)
    if target is None:
        raise ValueError(f"endpoint-to-host action {action!r} is not one of {', '.join(ENDPOINT_TO_HOST_ACTIONS)}")
    rules = [f"-j {CHAIN_FROM_DISPATCH}", *failsafe_rules(failsafe, "ACCEPT")]
    if target != "RETURN":
        rules.append(f"-j {target}")
    return rules


def _gnp_rules(refs: _Refs, pol: Resource, direction: str) -> list[str]:
    """Rule bodies of one Calico policy (global or namespaced) for one direction, in order (first
    Allow/Deny/Pass decides)."""
    out: list[str] = []
    pol_ns = policy_namespace(pol)
    for rule in pol.spec.get("ingress" if direction == "Ingress" else "egress") or []:
        action = rule.get("action")
        head: list[str] = []
        proto: str | None = None
        if rule.get("protocol") is not None:
            proto = _calico_proto(rule["protocol"])
            if proto is None:
                continue  # an ICMPv6 rule matches no IPv4 packet
            head.append(f"-p {proto}")
        if rule.get("notProtocol") is not None:
            nproto = _calico_proto(rule["notProtocol"])
            if nproto is not None:
                head.append(f"! -p {nproto}")
        icmp = rule.get("icmp")
        if icmp and icmp.get("type") is not None:
            code = icmp.get("code")
            head.append(f"-m icmp --icmp-type {icmp['type']}" + (f"/{code}" if code is not None else ""))
        src = _entity_frags(refs, rule.get("source") or {}, "src", proto, pol_ns)
        dst = _entity_frags(refs, rule.get("destination") or {}, "dst", proto, pol_ns)
        if src is None or dst is None:
            continue
        if action == "Allow":
            target, after = _SET_MARK, [_RETURN_IF_MARK]
        elif action == "Pass":
            target, after = _SET_PASS, [_RETURN_IF_PASS]
        elif action == "Deny":
            target, after = "-j DROP", []
        elif action == "Log":
            target, after = f"-j LOG --log-prefix l3n:{(pol.name or '')[:24]}", []
        else:
            raise ValueError(f"action {action!r} is not Allow, Deny, Log or Pass")
        for s in src:
            for d in dst:
                out.append(" ".join(x for x in (*head, s, d, target) if x))
        out += after
    return out


@dataclass(frozen=True)
class _Compiled:
    """A policy that compiled: which endpoints it applies to, its hashed chains, and the sets they reference.

    ``is_global``: a GlobalNetworkPolicy; ``tiered``: in the Calico tier (either Calico kind).
    """

    key: tuple[str, str, str]
    resource: Resource
    is_global: bool
    sort_key: tuple[Any, ...]
    types: tuple[str, ...]
    applies: Selector
    chains: dict[str, tuple[str, list[str]]]  # direction -> (chain name, hashed rules)
    sets: dict[str, SetSpec]  # every set it needs kept up to date (its chains' and its atoms' selectors)
    tiered: bool = False
    # A NetworkPolicy's set-lookup part: direction -> atoms (see _np_rules); its chain holds the rest and is
    # jumped to only for the directions in ``residual`` (where that rest is not empty).
    atoms: dict[str, tuple[Atom, ...]] = field(default_factory=dict)
    residual: frozenset[str] = frozenset()
    chain_sets: frozenset[str] = frozenset()  # the sets its chains' rules name (emitted with the chains)


def _policy_key(pol: Resource) -> tuple[str, str, str]:
    return (pol.kind, pol.namespace or "", pol.name)


def _compile_one(pol: Resource) -> _Compiled | None:
    refs = _Refs()
    key = _policy_key(pol)
    try:
        if pol.kind in ("GlobalNetworkPolicy", "CalicoNetworkPolicy"):
            types = gnp_types(pol.spec)
            applies = policy_applies(pol)
            # Chain name prefixes: gi/go for global, ci/co for namespaced (own namespace/name identity).
            pre = "g" if pol.kind == "GlobalNetworkPolicy" else "c"
            ident = calico_policy_name(pol)
            chains = {d: (chain_name(f"{pre}i" if d == "Ingress" else f"{pre}o", ident), _gnp_rules(refs, pol, d))
                      for d in types}
            sort_key: tuple[Any, ...] = (0, gnp_order(pol.spec), ident)
        else:
            types = policy_types(pol.spec)
            applies = all_of(LabelOp(CALICO_NAMESPACE_LABEL, "==", (pol.namespace or "",)),
                             parse_label_selector(pol.spec.get("podSelector") or {}, where="podSelector"))
            ident = f"{pol.namespace}/{pol.name}"
            split = {d: _np_rules(refs, pol, d) for d in types}
            chains = {d: (chain_name("pi" if d == "Ingress" else "po", ident), split[d][0]) for d in types}
            atoms = {d: tuple(sorted(set(split[d][1]))) for d in types}
            sort_key = (1, 0.0, pol.namespace or "", pol.name)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        _log.warning("policy ignored: cannot compile policy=%s error=%s", pol.ref, exc)
        return None
    hashed = {d: (name, hash_rules(name, rules)) for d, (name, rules) in chains.items()}
    text = "\n".join(r for _, rules in chains.values() for r in rules)
    chain_sets = frozenset(n for n in refs.sets if f"{n} " in text)  # a set name is always followed by its dirs
    if pol.kind != "NetworkPolicy":
        return _Compiled(key, pol, pol.kind == "GlobalNetworkPolicy", sort_key, types, applies, hashed, refs.sets,
                         tiered=True, residual=frozenset(types), chain_sets=frozenset(refs.sets))
    return _Compiled(key, pol, False, sort_key, types, applies, hashed, refs.sets, atoms=atoms,
                     residual=frozenset(d for d in types if chains[d][1]), chain_sets=chain_sets)


@dataclass(frozen=True)
class _Tier:
    """The Kubernetes tier of one endpoint and direction: two set lookups decide what the atoms of its
    policies allow, then the chains of the policies with residual rules are walked."""

    port_set: str | None  # hash:net,port of (peer net, protocol:port), from the atoms with a port
    port_atoms: tuple[Atom, ...]
    any_set: str | None  # hash:net of peer nets allowed every protocol and port
    any_atoms: tuple[Atom, ...]
    chains: tuple[str, ...]  # the residual policy chains, in policy order


def _tier(nps: Sequence[_Compiled], direction: str) -> _Tier:
    atoms: set[Atom] = set()
    for c in nps:
        atoms.update(c.atoms.get(direction, ()))
    port_atoms = tuple(sorted(a for a in atoms if a[2]))
    any_atoms = tuple(sorted(a for a in atoms if not a[2]))
    # Named by content, so endpoints whose policies say the same share one set (and a peer's label change
    # only moves members).
    port_set = _ipset_name("k", ";".join(f"{k}{p},{proto}:{n}" for k, p, proto, n in port_atoms)) \
        if port_atoms else None
    any_set = _ipset_name("u", ";".join(f"{k}{p}" for k, p, _, _ in any_atoms)) if any_atoms else None
    return _Tier(port_set, port_atoms, any_set, any_atoms,
                 tuple(c.chains[direction][0] for c in nps if direction in c.residual))


def _with_port(nets: Iterable[str], proto: str, port: int) -> set[str]:
    return {f"{n},{proto}:{port}" for n in nets}


def _atom_members(atom: Atom, nets: frozenset[str],
                  before: tuple[frozenset[str], frozenset[str]] | None) -> frozenset[str]:
    """One selector atom's members of a tier set: the selector set's members ``nets``, with ``,proto:port``
    when it has a port. ``before``: (the selector members, the result) of the last time, patched by the
    difference when that is small (a pod came or went) instead of formatting every member again."""
    _, _, proto, port = atom
    if not proto:
        return nets
    if before is not None and before[0] is not nets:
        gone, new = before[0] - nets, nets - before[0]
        if len(gone) + len(new) < len(nets) // 2:
            return frozenset((before[1] - _with_port(gone, proto, port)) | _with_port(new, proto, port))
    return frozenset(_with_port(nets, proto, port))


def _dispatch_rules(direction: str, kind: str, ifaces: Sequence[str]) -> list[str]:
    """A dispatch chain's rules (the flat root, or one sub-chain of the tree): a goto per interface, then DROP."""
    return [*(f"{direction} {i} -g {chain_name(kind, i)}" for i in ifaces), "-j DROP"]


def _member(net: str, proto: str, port: int) -> str:
    return f"{net},{proto}:{port}" if proto else net


def _patch_combined(atoms: Sequence[Atom], before: Mapping[str, frozenset[str]], now: Mapping[str, frozenset[str]],
                    value: frozenset[str]) -> frozenset[str] | None:
    """A tier set's members after some of its selector sets changed, from its members ``value`` when they
    were ``before`` (selector set -> members): only the nets that came or went are formatted, and a member
    that went from one atom stays when another atom still makes it. None when so much changed that
    building it again is as cheap (the caller does)."""
    moved = {sn: (old - now[sn], now[sn] - old) for sn, old in before.items() if old is not now[sn]}
    budget = len(value) // 2 + 16
    gone: dict[str, tuple[str, str, int]] = {}
    new: set[str] = set()
    for kind, peer, proto, port in atoms:
        if kind != "s" or peer not in moved:
            continue
        went, came = moved[peer]
        budget -= len(went) + len(came)
        if budget < 0:
            return None
        for net in went:
            gone[_member(net, proto, port)] = (net, proto, port)
        new.update(_member(net, proto, port) for net in came)
    if gone:
        makers: dict[tuple[str, int], list[Atom]] = {}
        for atom in atoms:
            makers.setdefault((atom[2], atom[3]), []).append(atom)
        for member, (net, proto, port) in list(gone.items()):
            if any((net in now[p]) if k == "s" else p == net for k, p, _, _ in makers[(proto, port)]):
                del gone[member]  # another atom (or the same one, by another selector) still makes it
    if not gone and not new:
        return value
    return value.difference(gone) | new


# -- the incremental compiler -----------------------------------------------------------------------------
@dataclass
class _Endpoint:
    resource: Resource
    labels: dict[str, str]
    ips: tuple[str, ...]
    ports: tuple[tuple[str, str, int], ...]


class PolicyCompiler:
    """Owns the caches that make recompiling a node's policy program cheap; ``compile`` is a pure function.

    ``compile(...)`` returns exactly what a fresh compiler returns for the same
    inputs (the caches only remember work): unchanged policies (same object or
    equal resource) are not recompiled, set members are updated only for
    endpoints whose labels, namespace labels or addresses changed, and endpoint
    chains are re-rendered only when their interface, addresses or applying
    policies changed. Cache entries not used by the last call are dropped, so
    memory follows the current inputs. Not thread-safe: one caller at a time (its
    owner, e.g. the agent's loop thread). Never raises on
    content; bad policies are logged and skipped.
    """

    def __init__(self) -> None:
        self._policies: dict[tuple[str, str, str], tuple[Resource, _Compiled | None]] = {}
        self._endpoints: dict[Hashable, _Endpoint] = {}
        self._ns_labels: dict[str, dict[str, str]] = {}
        self._members = SelectorIndex()   # selector-set name -> endpoint keys (all endpoints)
        self._set_specs: dict[str, SetSpec] = {}
        self._set_cache: dict[str, tuple[str, frozenset[str]]] = {}
        self._applies = SelectorIndex()   # policy key -> local endpoint keys
        self._ep_chains: dict[Hashable, tuple[tuple[Any, ...], str, list[str], str, list[str]]] = {}
        # (direction, policy keys) -> (the compiled policies it was made from, their Kubernetes tier)
        self._tiers: dict[tuple[Any, ...], tuple[tuple[_Compiled, ...], _Tier]] = {}
        # combined set name -> (the selector set values it was made from, its value)
        self._combined: dict[str, tuple[tuple[frozenset[str], ...], tuple[str, frozenset[str]]]] = {}
        # selector atom -> (the selector set's members, the atom's members of a tier set)
        self._atoms: dict[Atom, tuple[frozenset[str], frozenset[str]]] = {}
        self._dispatch: tuple[tuple[tuple[str, ...], str], dict[str, list[str]]] | None = None
        self._dispatch_leaves: dict[str, tuple[tuple[str, ...], list[str]]] = {}
        self._hosts: tuple[tuple[Any, ...], HostEndpointRender] | None = None
        self._ipv6: dict[Hashable, tuple[str, ...]] = {}  # local endpoint -> its IPv6 addresses (unpoliced)
        self._ordered: list[_Compiled] = []
        self._local_labels: dict[Hashable, dict[str, str]] = {}
        self._selected: dict[Hashable, dict[str, list[_Compiled]]] = {}
        self.compiles = 0
        self.policies_recompiled = 0

    # ---- inputs -> indexes ----
    def _sync_namespaces(self, namespaces: Iterable[Resource]) -> set[str]:
        new = namespace_labels(namespaces)
        changed = {n for n in set(new) | set(self._ns_labels) if new.get(n) != self._ns_labels.get(n)}
        self._ns_labels = new
        return changed

    def _sync_endpoints(self, all_endpoints: Iterable[Resource], changed_ns: set[str]) -> set[str]:
        """Update the member index; returns set names whose members' addresses or ports changed."""
        dirty: set[str] = set()
        seen: set[Hashable] = set()
        key: Hashable
        for wep in all_endpoints:
            if wep.kind == "WorkloadEndpoint":
                key = (wep.namespace or "", wep.name)
            elif wep.kind in NETWORK_SET_KINDS or wep.kind == HOST_ENDPOINT_KIND:
                key = (wep.kind, wep.namespace or "", wep.name)  # never equal to an endpoint's 2-tuple
            else:
                continue
            seen.add(key)
            old = self._endpoints.get(key)
            if old is not None and (old.resource is wep or old.resource == wep) \
                    and (wep.namespace or "") not in changed_ns:
                continue
            if wep.kind == "WorkloadEndpoint":
                ep = _Endpoint(wep, endpoint_labels(wep, self._ns_labels), tuple(workload_ips(wep)),
                               tuple(workload_ports(wep)))
            elif wep.kind == HOST_ENDPOINT_KIND:
                # A host endpoint is a selector-set member through its expectedIPs (as in Calico).
                ep = _Endpoint(wep, own_labels(wep), tuple(host_endpoint_ips(wep)), ())
            else:
                # A network set is a selector-set member like an endpoint: its nets are its addresses.
                ep = _Endpoint(wep, network_set_labels(wep, self._ns_labels), tuple(network_set_nets(wep)), ())
            self._endpoints[key] = ep
            self._members.update_item(key, ep.labels)
            if old is None or old.ips != ep.ips or old.ports != ep.ports:
                dirty.update(n for n in self._set_specs if self._set_specs[n][0] != "net"
                             and (self._set_specs[n][0] == "named" or self._members.contains(n, key)))
        for key in [k for k in self._endpoints if k not in seen]:
            gone = self._endpoints.pop(key)
            self._members.remove_item(key)
            if gone.ports:
                dirty.update(n for n, s in self._set_specs.items() if s[0] == "named")
        return dirty

    def _sync_policies(self, policies: Iterable[Resource]) -> bool:
        changed = False
        seen: set[tuple[str, str, str]] = set()
        for pol in policies:
            if pol.kind not in POLICY_KINDS:
                continue
            key = _policy_key(pol)
            seen.add(key)
            cached = self._policies.get(key)
            if cached is not None and (cached[0] is pol or cached[0] == pol):
                continue
            compiled = _compile_one(pol)
            self.policies_recompiled += 1
            self._policies[key] = (pol, compiled)
            changed = True
            if compiled is None or is_host_only(pol):
                self._applies.remove_selector(key)  # untracked and pre-DNAT policy never applies to a workload
            else:
                self._applies.add_selector(key, compiled.applies)
        for key in [k for k in self._policies if k not in seen]:
            del self._policies[key]
            self._applies.remove_selector(key)
            changed = True
        if changed:
            self._ordered = sorted((c for _, c in self._policies.values() if c is not None), key=lambda c: c.sort_key)
            specs: dict[str, SetSpec] = {}
            for c in self._ordered:
                specs.update(c.sets)
            for name in [n for n in self._set_specs if n not in specs]:
                del self._set_specs[name]
                self._set_cache.pop(name, None)
                self._members.remove_selector(name)
            for name, spec in specs.items():
                if name not in self._set_specs:
                    self._set_specs[name] = spec
                    if spec[0] == "sel":
                        self._members.add_selector(name, spec[1])
            self._members.pop_changes()  # new sets are not cached yet; nothing else changed here
        return changed

    def _set_value(self, name: str, dirty: set[str]) -> tuple[str, frozenset[str]]:
        cached = self._set_cache.get(name)
        if cached is not None and name not in dirty:
            return cached
        spec = self._set_specs[name]
        if spec[0] == "net":
            value = ("hash:net", spec[1])
        elif spec[0] == "sel":
            value = ("hash:net", _set_nets(ip for k in self._members.members(name) for ip in self._endpoints[k].ips))
        else:
            _, proto, pname = spec
            value = ("hash:ip,port", frozenset(
                f"{ip},{proto}:{num}" for ep in self._endpoints.values() for n, p, num in ep.ports
                if n == pname and p.lower() == proto for ip in ep.ips))
        self._set_cache[name] = value
        return value

    # ---- output ----
    def compile(self, local_endpoints: Iterable[Resource], all_endpoints: Iterable[Resource],
                policies: Iterable[Resource], namespaces: Iterable[Resource], *,
                iface_prefix: str = WORKLOAD_IFACE_PREFIX, reverse_path_filter: bool = True,
                endpoint_to_host_action: str = "Drop",
                failsafe_ports: Sequence[tuple[str, int]] = (),
                fail_closed: frozenset[Hashable] = frozenset(),
                host_endpoints: Iterable[Resource] = (),
                host_failsafe_in: Sequence[tuple[str, int]] = (),
                host_failsafe_out: Sequence[tuple[str, int]] = ()) -> PolicyProgram:
        """The whole policy dataplane of one node (see the module docstring for its layout).

        ``all_endpoints``: every WorkloadEndpoint, NetworkSet, GlobalNetworkSet and HostEndpoint (selector-set
        members; other kinds are ignored). A change of a set's nets or labels only changes set members.
        ``host_endpoints``: this node's HostEndpoints, policed by :mod:`policy.host_endpoints` with the
        failsafe ports ``host_failsafe_in``/``host_failsafe_out`` always open.

        ``endpoint_to_host_action``: Calico's DefaultEndpointToHostAction (Drop, Accept, Return);
        ``failsafe_ports``: (protocol, port) pairs a workload may reach on the node even so.
        ``fail_closed`` holds ``(namespace, name)`` of local endpoints left out entirely (quarantined by
        the agent because the kernel refused what they render to): no chain, no dispatch entry, so the
        dispatch chains' final DROP carries none of their traffic.
        """
        wl_to_host = hash_rules(CHAIN_WL_TO_HOST, wl_to_host_rules(endpoint_to_host_action, failsafe_ports))
        t0 = time.perf_counter()
        before = self.policies_recompiled
        self.compiles += 1
        changed_ns = self._sync_namespaces(namespaces)
        policies_changed = self._sync_policies(policies)
        dirty = self._sync_endpoints(all_endpoints, changed_ns)
        dirty |= self._members.pop_changes()

        locals_ = self._local_workloads(local_endpoints)
        relabelled = self._sync_local_labels(locals_)
        self._select_policies(locals_, relabelled, policies_changed)

        wildcard = f"{iface_prefix}+"
        hosts = self._host_render(host_endpoints, policies_changed, host_failsafe_in, host_failsafe_out)
        filter_chains = self._base_chains(wildcard, wl_to_host, hosts)
        ipsets: dict[str, tuple[str, frozenset[str]]] = {}
        used: dict[str, tuple[_Compiled, str]] = {}
        keep: set[str] = set()
        ordered_locals = sorted(locals_.items(), key=lambda kv: str(kv[1].spec["interfaceName"]))
        self._render_locals(ordered_locals, fail_closed, policies_changed, relabelled, filter_chains, ipsets, used)
        self._render_tier_sets(dirty, ipsets, keep)
        for key in [k for k in self._ipv6 if k not in locals_]:
            del self._ipv6[key]
        self._render_dispatch(ordered_locals, fail_closed, filter_chains, iface_prefix)
        self._render_used(used, dirty, filter_chains, ipsets, hosts, keep)

        program = self._program(filter_chains, ipsets, wildcard, reverse_path_filter, hosts)
        program = replace(program, policies_recompiled=self.policies_recompiled - before,
                          compile_seconds=time.perf_counter() - t0)
        _log.debug("policy compiled policies=%d recompiled=%d rules=%d seconds=%.4f", program.policies,
                   program.policies_recompiled, program.rule_count, program.compile_seconds)
        return program

    @staticmethod
    def _local_workloads(local_endpoints: Iterable[Resource]) -> dict[Hashable, Resource]:
        """(namespace, name) -> the local WorkloadEndpoints that have an interface to police."""
        locals_: dict[Hashable, Resource] = {}
        for w in local_endpoints:
            if w.kind == "WorkloadEndpoint" and w.spec.get("interfaceName"):
                locals_[(w.namespace or "", w.name)] = w
        return locals_

    def _sync_local_labels(self, locals_: dict[Hashable, Resource]) -> set[Hashable]:
        """Forget local endpoints that left and index the labels of the rest; returns those whose labels changed."""
        for key in [k for k in self._local_labels if k not in locals_]:
            self._applies.remove_item(key)
            del self._local_labels[key]
            self._selected.pop(key, None)
        relabelled: set[Hashable] = set()
        for key in locals_:
            ep = self._endpoints.get(key)
            labels = ep.labels if ep is not None else endpoint_labels(locals_[key], self._ns_labels)
            if self._local_labels.get(key) != labels:
                self._local_labels[key] = labels
                self._applies.update_item(key, labels)
                relabelled.add(key)
        self._applies.pop_changes()
        return relabelled

    def _select_policies(self, locals_: dict[Hashable, Resource], relabelled: set[Hashable],
                         policies_changed: bool) -> None:
        # Which policies apply to each local endpoint, in evaluation order; recomputed for every endpoint
        # only when a policy changed, else only for endpoints that are new or relabelled.
        if policies_changed:
            self._selected = {k: {"Ingress": [], "Egress": []} for k in locals_}
            for c in self._ordered:
                for key in self._applies.members(c.key):
                    per = self._selected.get(key)
                    if per is not None:
                        for d in c.types:
                            per[d].append(c)
            return
        for key in relabelled:
            per = {"Ingress": [], "Egress": []}
            applying = self._applies.matching(key)  # one match per distinct selector, not per policy
            for c in self._ordered:
                if c.key in applying:
                    for d in c.types:
                        per[d].append(c)
            self._selected[key] = per

    def _host_render(self, host_endpoints: Iterable[Resource], policies_changed: bool,
                     failsafe_in: Sequence[tuple[str, int]],
                     failsafe_out: Sequence[tuple[str, int]]) -> HostEndpointRender:
        """This node's host endpoint chains; re-rendered only when a policy, an endpoint or a port changed."""
        heps = local_host_endpoints(host_endpoints)
        key = (tuple(heps), tuple(failsafe_in), tuple(failsafe_out))
        if self._hosts is None or policies_changed or self._hosts[0] != key:
            self._hosts = (key, render_host_endpoints(heps, self._ordered, failsafe_in=failsafe_in,
                                                      failsafe_out=failsafe_out))
        return self._hosts[1]

    @staticmethod
    def _base_chains(wildcard: str, wl_to_host: list[str], hosts: HostEndpointRender) -> dict[str, list[str]]:
        """The fixed chains: the kernel hooks' jumps to dispatch, to workload-to-host and to host endpoints.

        Forwarded traffic passes the workload side, then the host endpoint side (both must allow), and
        only then is a workload's accepted; anything else goes on to the host's own rules.
        """
        return {
            CHAIN_FORWARD: hash_rules(CHAIN_FORWARD, [
                f"-i {wildcard} -j {CHAIN_FROM_DISPATCH}", f"-o {wildcard} -j {CHAIN_TO_DISPATCH}",
                *hosts.filter_forward, f"-i {wildcard} -j ACCEPT", f"-o {wildcard} -j ACCEPT"]),
            CHAIN_INPUT: hash_rules(CHAIN_INPUT, [f"-i {wildcard} -j {CHAIN_WL_TO_HOST}", *hosts.filter_input]),
            CHAIN_WL_TO_HOST: wl_to_host,
            CHAIN_OUTPUT: hash_rules(CHAIN_OUTPUT, [f"-o {wildcard} -j RETURN", *hosts.filter_output]),
            **hosts.chains.get("filter", {}),
        }

    def _render_locals(self, ordered_locals: list[tuple[Hashable, Resource]], fail_closed: frozenset[Hashable],
                       policies_changed: bool, relabelled: set[Hashable], filter_chains: dict[str, list[str]],
                       ipsets: dict[str, tuple[str, frozenset[str]]], used: dict[str, tuple[_Compiled, str]]) -> None:
        """Each local endpoint's from- and to-workload chains (and its address set) into ``filter_chains`` and
        ``ipsets``; the policy chains they jump to into ``used``."""
        ep_cache: dict[Hashable, tuple[tuple[Any, ...], str, list[str], str, list[str]]] = {}
        for key, wep in ordered_locals:
            iface = str(wep.spec["interfaceName"])
            if key in fail_closed:
                # Quarantined (the kernel refused what it renders to, its interface name included): nothing
                # of it is rendered, so the dispatch chains' last rule drops its traffic both ways.
                continue
            ep = self._endpoints.get(key)
            ips = ep.ips if ep is not None and ep.resource is wep else tuple(workload_ips(wep))
            sel = self._selected[key]
            for d in ("Ingress", "Egress"):
                for c in sel[d]:
                    if d in c.residual:
                        used[c.chains[d][0]] = (c, d)
            cached = self._endpoint_chains(key, wep, iface, ips, sel, policies_changed or key in relabelled)
            ep_cache[key] = cached
            _, fw, fw_rules, tw, tw_rules = cached
            filter_chains[fw] = fw_rules
            filter_chains[tw] = tw_rules
            if len(ips) > 1:
                ipsets[_ipset_name("w", iface)] = ("hash:net", _set_nets(ips))
        self._ep_chains = ep_cache
        if len(self._tiers) > 2 * len(ep_cache) + 16:
            live = {id(t) for sig, *_ in ep_cache.values() for t in sig[5:7] if t is not None}
            self._tiers = {k: v for k, v in self._tiers.items() if id(v[1]) in live}

    def _k8s_tier(self, nps: list[_Compiled], direction: str) -> _Tier | None:
        """The Kubernetes tier of an endpoint whose applying NetworkPolicies are ``nps`` (None: none applies)."""
        if not nps:
            return None
        key = (direction, *(c.key for c in nps))
        hit = self._tiers.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], nps, strict=True)):
            return hit[1]
        tier = _tier(nps, direction)
        self._tiers[key] = (tuple(nps), tier)
        return tier

    def _render_tier_sets(self, dirty: set[str], ipsets: dict[str, tuple[str, frozenset[str]]],
                          keep: set[str]) -> None:
        """The combined sets the endpoint chains look up, into ``ipsets``; the selector sets they are made of
        into ``keep``. A combined set is rebuilt only when one of those selector sets changed value."""
        memo: dict[str, frozenset[str]] = {}
        live: dict[str, tuple[tuple[frozenset[str], ...], tuple[str, frozenset[str]]]] = {}
        atoms_live: dict[Atom, tuple[frozenset[str], frozenset[str]]] = {}
        live_atoms: list[tuple[Atom, ...]] = []
        for sig, *_ in self._ep_chains.values():
            for tier in sig[5:7]:
                if tier is None:
                    continue
                for name, kind, atoms in ((tier.port_set, "hash:net,port", tier.port_atoms),
                                          (tier.any_set, "hash:net", tier.any_atoms)):
                    if name is None or name in ipsets:
                        continue
                    sels = sorted({p for k, p, _, _ in atoms if k == "s"})
                    for sn in sels:
                        if sn not in memo:
                            memo[sn] = self._set_value(sn, dirty)[1]
                    vals = tuple(memo[sn] for sn in sels)
                    keep.update(sels)
                    cached = self._combined.get(name)
                    if cached is not None and len(cached[0]) == len(vals) \
                            and not all(a is b for a, b in zip(cached[0], vals, strict=True)):
                        patched = _patch_combined(atoms, dict(zip(sels, cached[0], strict=True)), memo, cached[1][1])
                        if patched is not None:
                            cached = (vals, (kind, patched))
                    if cached is None or len(cached[0]) != len(vals) \
                            or not all(a is b for a, b in zip(cached[0], vals, strict=True)):
                        parts: list[Iterable[str]] = []
                        for atom in atoms:
                            if atom[0] != "s":
                                parts.append((f"{atom[1]},{atom[2]}:{atom[3]}" if atom[2] else atom[1],))
                                continue
                            done = atoms_live.get(atom)
                            if done is None:
                                nets = memo[atom[1]]
                                done = (nets, _atom_members(atom, nets, self._atoms.get(atom)))
                                atoms_live[atom] = done
                            parts.append(done[1])
                        cached = (vals, (kind, frozenset().union(*parts)))
                    live[name] = cached
                    ipsets[name] = cached[1]
                    live_atoms.append(atoms)
        if atoms_live or live.keys() != self._combined.keys():  # else the atoms in use are the same as before
            in_use: set[Atom] = {a for atoms in live_atoms for a in atoms if a[0] == "s"}
            # Any (members, result) pair is a correct base to patch from; keep those of the atoms in use.
            self._atoms = {a: atoms_live.get(a) or self._atoms[a] for a in in_use
                           if a in atoms_live or a in self._atoms}
        self._combined = live

    def _endpoint_chains(self, key: Hashable, wep: Resource, iface: str, ips: tuple[str, ...],
                         sel: Mapping[str, list[_Compiled]],
                         stale: bool) -> tuple[tuple[Any, ...], str, list[str], str, list[str]]:
        """(signature, fw chain, its rules, tw chain, its rules) of one endpoint, re-rendered only when what
        they depend on changed (``stale``: its policies may have)."""
        cached = self._ep_chains.get(key)
        if cached is None or cached[0][0] is not wep:
            self._note_ipv6(key, wep)
        if cached is not None and not stale and cached[0][0] is wep:
            return cached
        # (wep, iface, ips, Calico-tier chains out, in, Kubernetes tier out, in): sig[5:7] are the tiers
        sig = (wep, iface, ips, *(tuple(c.chains[d][0] for c in sel[d] if c.tiered) for d in ("Egress", "Ingress")),
               *(self._k8s_tier([c for c in sel[d] if not c.tiered], d) for d in ("Egress", "Ingress")))
        if cached is None or cached[0][1:] != sig[1:]:
            return (sig, *self._render_endpoint(iface, ips, sig[3:5], sig[5:7]))
        return (sig, *cached[1:])

    def _render_dispatch(self, ordered_locals: list[tuple[Hashable, Resource]], fail_closed: frozenset[Hashable],
                         filter_chains: dict[str, list[str]], iface_prefix: str = WORKLOAD_IFACE_PREFIX) -> None:
        """The from- and to-dispatch chains (one goto per programmed interface, then DROP); cached by interfaces.

        Past ``DISPATCH_SPLIT`` interfaces they become a two-level tree, as Calico's: the root chains go to
        one sub-chain per interface-name prefix (``-i cali9+``), each holding that prefix's interfaces, so a
        pod that comes or goes rewrites a handful of rules, not two chains as long as the node's pods."""
        ifaces = tuple(str(w.spec["interfaceName"]) for k, w in ordered_locals if k not in fail_closed)
        if self._dispatch is None or self._dispatch[0] != (ifaces, iface_prefix):
            groups: dict[str, list[str]] = {}
            if len(ifaces) > DISPATCH_SPLIT:
                cut = len(iface_prefix) + 1
                for i in ifaces:
                    # a name no longer than the prefix stays in the root (its ``+`` would match other names)
                    groups.setdefault(i[:cut] if len(i) >= cut else "", []).append(i)
            chains: dict[str, list[str]] = {}
            for direction, root, kind, sub in (("-i", CHAIN_FROM_DISPATCH, "fw", "fd"),
                                               ("-o", CHAIN_TO_DISPATCH, "tw", "td")):
                if not groups:
                    chains[root] = hash_rules(root, _dispatch_rules(direction, kind, ifaces))
                    continue
                top = [f"{direction} {i} -g {chain_name(kind, i)}" for i in groups.get("", [])]
                for key, members in sorted((k, v) for k, v in groups.items() if k):
                    name = chain_name(sub, key)
                    top.append(f"{direction} {key}+ -g {name}")
                    chains[name] = self._dispatch_leaf(name, direction, kind, tuple(members))
                chains[root] = hash_rules(root, [*top, "-j DROP"])
            self._dispatch = ((ifaces, iface_prefix), chains)
            self._dispatch_leaves = {n: v for n, v in self._dispatch_leaves.items() if n in chains}
        filter_chains.update(self._dispatch[1])

    def _dispatch_leaf(self, name: str, direction: str, kind: str, ifaces: tuple[str, ...]) -> list[str]:
        """One sub-chain of the dispatch tree, re-hashed only when its interfaces changed."""
        hit = self._dispatch_leaves.get(name)
        if hit is None or hit[0] != ifaces:
            hit = (ifaces, hash_rules(name, _dispatch_rules(direction, kind, ifaces)))
            self._dispatch_leaves[name] = hit
        return hit[1]

    def _render_used(self, used: dict[str, tuple[_Compiled, str]], dirty: set[str],
                     filter_chains: dict[str, list[str]], ipsets: dict[str, tuple[str, frozenset[str]]],
                     hosts: HostEndpointRender, keep: set[str]) -> None:
        # Only sets that a programmed rule references are emitted (reference counting, as Felix does).
        for chain, (c, d) in used.items():
            filter_chains[chain] = c.chains[d][1]
        for c in [*(c for c, _ in used.values()), *(p for p, _ in hosts.policies)]:
            for name in c.chain_sets:
                if name not in ipsets:
                    ipsets[name] = self._set_value(name, dirty)
        for name in dirty:
            if name not in ipsets and name not in keep:
                self._set_cache.pop(name, None)  # not referenced now: recompute when it is next used

    def _program(self, filter_chains: dict[str, list[str]], ipsets: dict[str, tuple[str, frozenset[str]]],
                 wildcard: str, reverse_path_filter: bool, hosts: HostEndpointRender) -> PolicyProgram:
        """The program from the rendered chains and sets, with the kernel hooks (and rpfilter) that reach them."""
        chains: dict[str, dict[str, list[str]]] = {"filter": dict(sorted(filter_chains.items()))}
        hooks: dict[str, dict[str, list[str]]] = {
            "filter": {k: hash_rules(k, [f"-j {c}"])
                       for k, c in (("FORWARD", CHAIN_FORWARD), ("INPUT", CHAIN_INPUT), ("OUTPUT", CHAIN_OUTPUT))}}
        raw_pre = [f"-i {wildcard} -m rpfilter --invert -j DROP"] if reverse_path_filter else []
        raw_pre += hosts.raw_prerouting
        if raw_pre:
            chains["raw"] = {CHAIN_PREROUTING: hash_rules(CHAIN_PREROUTING, raw_pre)}
            hooks["raw"] = {"PREROUTING": hash_rules("PREROUTING", [f"-j {CHAIN_PREROUTING}"])}
        for table, own in hosts.chains.items():
            if table != "filter":
                chains.setdefault(table, {}).update(own)
                chains[table] = dict(sorted(chains[table].items()))
        for table, by_kernel in hosts.hooks.items():
            for kchain, target in by_kernel.items():
                hooks.setdefault(table, {})[kchain] = hash_rules(kchain, [f"-j {target}"])
        program = PolicyProgram(chains=chains, hooks=hooks,
                                policies=sum(1 for _, c in self._policies.values() if c is not None),
                                global_policies=sum(1 for _, c in self._policies.values()
                                                    if c is not None and c.is_global),
                                ipsets=dict(sorted(ipsets.items())),
                                ipv6_unpoliced=tuple(sorted(f"{k[0]}/{k[1]}" for k in self._ipv6)))  # type: ignore[index]
        return program

    def _note_ipv6(self, key: Hashable, wep: Resource) -> None:
        """Remember (and warn once per change) that this local workload's IPv6 traffic goes unpoliced."""
        v6 = tuple(workload_ips(wep, version=6))
        if not v6:
            self._ipv6.pop(key, None)
            return
        if self._ipv6.get(key) != v6:
            _log.warning("IPv6 traffic of this workload is NOT policed (policy is IPv4 only) wep=%s addresses=%s",
                         wep.ref, ",".join(v6))
        self._ipv6[key] = v6

    @staticmethod
    def _render_endpoint(iface: str, ips: tuple[str, ...], calico: tuple[tuple[str, ...], tuple[str, ...]],
                         k8s: tuple[_Tier | None, _Tier | None]) -> tuple[str, list[str], str, list[str]]:
        """``calico``: the Calico tier's policy chains, ``k8s``: the Kubernetes tier, each (egress, ingress)."""
        fw, tw = chain_name("fw", iface), chain_name("tw", iface)
        if not ips:
            fw_rules = ["-j DROP"]  # a workload without an address may not send at all
        elif len(ips) == 1:
            fw_rules = [f"! -s {ips[0]}/32 -j DROP"]
        else:
            fw_rules = [f"-m set ! --match-set {_ipset_name('w', iface)} src -j DROP"]
        fw_rules += [_CT_ACCEPT, _CT_INVALID]
        tw_rules = [_CT_ACCEPT, _CT_INVALID]
        for gnps, tier, side, rules in ((calico[0], k8s[0], "dst", fw_rules), (calico[1], k8s[1], "src", tw_rules)):
            if gnps:
                rules.append(_CLEAR_BOTH)
                for chain in gnps:
                    rules += [f"{_UNLESS_PASSED} -j {chain}", _RETURN_IF_MARK]
                rules.append(f"{_UNLESS_PASSED} -j DROP")  # end of tier: drop unless a policy passed
            if tier is not None:
                # A union: any set hit allows (RETURN: this side allows), then the policies' residual chains.
                if tier.port_set is not None:
                    rules.append(f"-m set --match-set {tier.port_set} {side},dst -j RETURN")
                if tier.any_set is not None:
                    rules.append(f"-m set --match-set {tier.any_set} {side} -j RETURN")
                if tier.chains and not gnps:
                    rules.append(_CLEAR_MARK)
                for chain in tier.chains:
                    rules += [f"-j {chain}", _RETURN_IF_MARK]
                rules.append("-j DROP")
        return fw, hash_rules(fw, fw_rules), tw, hash_rules(tw, tw_rules)


def compile_policy(local_endpoints: Iterable[Resource], all_endpoints: Iterable[Resource],
                   policies: Iterable[Resource], namespaces: Iterable[Resource], *,
                   iface_prefix: str = WORKLOAD_IFACE_PREFIX, reverse_path_filter: bool = True,
                   endpoint_to_host_action: str = "Drop", failsafe_ports: Sequence[tuple[str, int]] = (),
                   compiler: PolicyCompiler | None = None,
                   fail_closed: frozenset[Hashable] = frozenset(),
                   host_endpoints: Iterable[Resource] = (),
                   host_failsafe_in: Sequence[tuple[str, int]] = (),
                   host_failsafe_out: Sequence[tuple[str, int]] = ()) -> PolicyProgram:
    """The whole policy dataplane of one node. Pure in effect: the result depends on the arguments only.

    Uses ``compiler`` (its owner's, so that repeated calls with mostly unchanged inputs
    are cheap) or, without one, a fresh :class:`PolicyCompiler`: a cold compile. There is
    no process-wide compiler, so no caller's caches or lock are shared with another's.
    """
    opts: dict[str, Any] = {"iface_prefix": iface_prefix, "reverse_path_filter": reverse_path_filter,
                            "endpoint_to_host_action": endpoint_to_host_action, "failsafe_ports": failsafe_ports,
                            "fail_closed": fail_closed, "host_endpoints": host_endpoints,
                            "host_failsafe_in": host_failsafe_in, "host_failsafe_out": host_failsafe_out}
    compiler = compiler if compiler is not None else PolicyCompiler()
    return compiler.compile(local_endpoints, all_endpoints, policies, namespaces, **opts)

