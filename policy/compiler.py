"""policy.compiler: NetworkPolicy, Calico NetworkPolicy and GlobalNetworkPolicy -> iptables chains and ipsets.

Owns reading a policy document: :func:`compile_one` turns one policy into its
:class:`policy.compiled.CompiledPolicy` (its chains and the sets they name), and
:class:`PolicyCompiler` composes the incremental :class:`policy.index.PolicyIndex`, the
:class:`policy.render_cache.RenderCache` and the pure renderer :mod:`policy.render` into a node's
:class:`PolicyProgram` (the filter table's layout is described in :mod:`policy.render`).

Policies come in two tiers, as in Calico (see :mod:`policy.evaluator`):
Calico's policies first (GlobalNetworkPolicies and namespaced ``projectcalico.org/v3``
NetworkPolicies together, by ``order``, ties by name; what their selectors mean is
:mod:`policy.calico`): each one's rules go, in order, into one ``l3n-gi-*``/``l3n-go-*``
(``l3n-ci-*``/``l3n-co-*`` when namespaced) chain per direction, where Allow sets the accept
mark and returns, Pass sets the pass mark and returns, Deny drops. Then the Kubernetes
NetworkPolicies, a union (any allow allows, order is moot), so mostly set lookups rather than a
walk: every (peer, port) pair of their rules that a set member can say is an *atom*
(peer: a selector set or an ipBlock without ``except``, or every address as
``0.0.0.0/1`` + ``128.0.0.0/1``; port: a number or an ``endPort`` range of at
most ``MAX_ATOM_RANGE`` ports, or none = every protocol and port). The atoms
of all the endpoint's policies for a direction fill two sets, a ``hash:net,port``
``l3nk:`` set of ``net,proto:port`` (matched ``src,dst`` for ingress, ``dst,dst``
for egress) and a ``hash:net`` ``l3nu:`` set of nets allowed every port. The rest (named
ports, ipBlocks with ``except``, a bare protocol, wide ranges) stays in one
``l3n-pi-*``/``l3n-po-*`` chain per policy, jumped to only when it is not empty. So a new
connection's first packet costs two lookups however many policies select its pods
(bench/conn_rate).

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

A policy's fields (directions, order, what it applies to) are read from the model's
typed spec (:mod:`l3net.model.policy_spec`), its rules from the typed rules in it
(:mod:`l3net.model.rule_spec`: addresses, ports and protocols parsed there, once per
policy object); what a rule means in iptables is decided here, where only selectors
are compiled (from their validated text).
Invalid content is treated as absent, never raised: a policy whose spec cannot be
compiled, or one built by hand that the model refuses, is logged and skipped whole
(the valid ones stay enforced); a selector that cannot be parsed matches nothing.

IPv4 only: nothing is written to ip6tables, so a workload's IPv6 traffic is NOT
policed (:mod:`policy.render_cache` warns and lists it in ``PolicyProgram.ipv6_unpoliced``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from l3net.constants import WORKLOAD_IFACE_PREFIX
from l3net.model import Resource
from l3net.model.calico_selector import LabelOp
from l3net.model.policy_spec import calico_policy_spec, kubernetes_policy_spec
from l3net.model.rule_spec import (
    ICMPV6,
    CalicoEntityRule,
    CalicoPort,
    IPNetwork,
    KubernetesPeer,
    KubernetesPort,
    PortRange,
)
from l3net.model.selectors import (
    Nothing,
    Selector,
    all_of,
    canonical_string,
    parse_calico,
    parse_label_selector,
    with_key_prefix,
)
from l3net.model.workload_spec import workload_spec
from policy.calico import PODS_ONLY, entity_selector, policy_applies, policy_namespace
from policy.compiled import Atom, CompiledPolicy, SetSpec, policy_key
from policy.index import IpsetValues, PolicyIndex
from policy.model import (
    CALICO_NAMESPACE_LABEL,
    NAMESPACE_LABEL_PREFIX,
    calico_policy_name,
    gnp_order,
    gnp_types,
    policy_types,
)
from policy.render import CHAIN_WL_TO_HOST, base_chains, program_tables, wl_to_host_rules
from policy.render_cache import RenderCache
from policy.rules import (
    RETURN_IF_ACCEPTED,
    RETURN_IF_PASSED,
    SET_ACCEPT,
    SET_PASS,
    chain_name,
    hash_rules,
    ipset_name,
    multiport_chunks,
    set_nets,
)

_log = logging.getLogger(__name__)

__all__ = ["MAX_ATOM_RANGE", "PolicyCompiler", "PolicyProgram", "compile_one", "compile_policy"]

_PORT_PROTOS = ("tcp", "udp", "sctp", "udplite")


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
    if isinstance(tables, FrozenDict) and all(isinstance(chains, FrozenDict) for chains in tables.values()):
        return tables   # frozen already (a program copied by dataclasses.replace): not rebuilt rule by rule
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
        if not isinstance(self.ipsets, FrozenDict):
            object.__setattr__(self, "ipsets", FrozenDict((n, (kind, frozenset(members)))
                                                          for n, (kind, members) in self.ipsets.items()))
        object.__setattr__(self, "ipv6_unpoliced", tuple(self.ipv6_unpoliced))
        if not isinstance(self.applied_objects, FrozenDict):
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


# -- per-policy compilation (pure: depends on the policy only) ----------------------------------------------
class _Refs:
    """Collects the sets one policy's rules reference."""

    def __init__(self) -> None:
        self.sets: dict[str, SetSpec] = {}

    def selector_set(self, sel: Selector) -> str:
        name = ipset_name("s", canonical_string(sel))
        self.sets[name] = ("sel", sel)
        return name

    def net_set(self, tag: str, nets: Iterable[IPNetwork]) -> str:
        members = set_nets(nets)
        name = ipset_name(tag, ",".join(sorted(members)))
        self.sets[name] = ("net", members)
        return name

    def named_port_set(self, protocol: str, port_name: str) -> str:
        name = ipset_name("n", f"{protocol}:{port_name}")
        self.sets[name] = ("named", protocol, port_name)
        return name


_PODS_ONLY = PODS_ONLY


def _np_peer_selector(pol_ns: str, peer: KubernetesPeer) -> Selector:
    """A NetworkPolicy peer's pod/namespace selectors as one selector over endpoint labels."""
    pod_sel, ns_sel = peer.pod_selector, peer.namespace_selector
    psel = parse_label_selector(pod_sel, where="podSelector") if pod_sel is not None else None
    if ns_sel is None:
        nsel: Selector = LabelOp(CALICO_NAMESPACE_LABEL, "==", (pol_ns,))
    else:
        nsel = with_key_prefix(parse_label_selector(ns_sel, where="namespaceSelector"), NAMESPACE_LABEL_PREFIX)
    # Pods only, as Calico converts a Kubernetes peer: network sets share the selector sets' index
    # and carry no orchestrator label.
    return all_of(_PODS_ONLY, nsel, psel)


# The atoms (policy.compiled.Atom) of a rule without peers: every address, as the two halves of 0.0.0.0/0.
_ANY_PEER = tuple(("n", half) for half in sorted(set_nets(["0.0.0.0/0"])))
MAX_ATOM_RANGE = 16  # an endPort range of at most this many ports becomes set members; a wider one stays a rule


def _np_peer(refs: _Refs, peer: KubernetesPeer, pol_ns: str,
             side: str) -> tuple[tuple[tuple[str, str], ...] | None, str] | None:
    """One peer on ``side`` (``src``/``dst``): (its set-lookup peers or None, its match fragment); None when it
    can match nothing. A peer that a ``hash:net`` member cannot say (an ipBlock with ``except``) has no
    set-lookup form."""
    flag = "-s" if side == "src" else "-d"
    block = peer.ip_block
    if block is not None:
        if block.cidr.version != 4:
            return None  # an IPv6 block matches no IPv4 packet
        frag = f"{flag} {block.cidr}"
        if block.excepts:  # of the cidr's family (the model holds them to it)
            return None, frag + f" -m set ! --match-set {refs.net_set('e', block.excepts)} {side}"
        return tuple(("n", n) for n in sorted(set_nets([block.cidr]))), frag
    if peer.pod_selector is None and peer.namespace_selector is None:
        return None  # validation refuses an empty peer; if one gets here it matches nothing
    name = refs.selector_set(_np_peer_selector(pol_ns, peer))
    return (("s", name),), f"-m set --match-set {name} {side}"


def _np_port(refs: _Refs, port: KubernetesPort) -> tuple[tuple[tuple[str, int], ...] | None, str]:
    """One port entry: (its (protocol, port) set-lookup pairs or None, its match fragment). Only numbers
    (and narrow ranges) have the set-lookup form: a name is resolved per destination, a bare protocol or a
    wide range would be too many members."""
    proto, number = port.protocol.lower(), port.port
    if number is None:
        return None, f"-p {proto}"
    if isinstance(number, str):
        return None, f"-p {proto} -m set --match-set {refs.named_port_set(proto, number)} dst,dst"
    last = port.end_port if port.end_port is not None else number   # never below the port (the model)
    rng = f"{number}:{last}" if last > number else str(number)
    pairs = tuple((proto, n) for n in range(number, last + 1)) if last - number < MAX_ATOM_RANGE else None
    return pairs, f"-p {proto} -m {proto} --dport {rng}"


def _np_rules(refs: _Refs, pol: Resource, direction: str) -> tuple[list[str], list[Atom]]:
    """One NetworkPolicy for one direction: (the rule bodies that set lookups cannot say, each setting the
    accept mark; the atoms that they can). A union: order is moot, so each (peer, port) pair of a rule goes
    to whichever form can hold it."""
    spec = kubernetes_policy_spec(pol)
    rules, side = (spec.ingress, "src") if direction == "Ingress" else (spec.egress, "dst")
    pol_ns = pol.namespace or ""
    out: list[str] = []
    atoms: list[Atom] = []
    for rule in rules:
        peer_parts = [(_ANY_PEER, "")] if not rule.peers else [
            f for f in (_np_peer(refs, p, pol_ns, side) for p in rule.peers) if f is not None]
        port_parts: list[tuple[tuple[tuple[str, int], ...] | None, str]] = \
            [((("", 0),), "")] if not rule.ports else [_np_port(refs, p) for p in rule.ports]
        for peer_atoms, pf in peer_parts:
            for port_atoms, qf in port_parts:
                if peer_atoms is not None and port_atoms is not None:
                    atoms += [(kind, peer, proto, num) for kind, peer in peer_atoms for proto, num in port_atoms]
                else:
                    out.append(" ".join(x for x in (pf, qf, SET_ACCEPT) if x))
    return out, atoms


def _port_text(p: PortRange) -> str:
    """A port or range as iptables' multiport spells it: it refuses a range whose ends are equal (``80:80``)."""
    return str(p.first) if p.first == p.last else f"{p.first}:{p.last}"


def _numbers(ports: Iterable[CalicoPort]) -> list[str]:
    return [_port_text(p) for p in ports if isinstance(p, PortRange)]


def _names(ports: Iterable[CalicoPort]) -> list[str]:
    return [p for p in ports if isinstance(p, str)]


def _entity_frags(refs: _Refs, entity: CalicoEntityRule, side: str, proto: str | None,
                  pol_ns: str | None = None) -> list[str] | None:
    """OR-alternatives of AND-ed matches for one side of a Calico rule; None when the side matches nothing.

    ``pol_ns``: the namespace of a Calico NetworkPolicy, which scopes the side's selectors (policy.calico).
    ``proto``: the rule's protocol; the model gives ports only to a rule with a port protocol.
    """
    flag = "-s" if side == "src" else "-d"
    base: list[str] = []
    if entity.nets:
        v4 = [n for n in entity.nets if n.version == 4]
        if not v4:
            return None
        base.append(f"{flag} {v4[0]}" if len(v4) == 1 else f"-m set --match-set {refs.net_set('a', v4)} {side}")
    not_nets = [n for n in entity.not_nets if n.version == 4]
    if not_nets:
        base.append(f"-m set ! --match-set {refs.net_set('x', not_nets)} {side}")
    sel = entity_selector(entity, pol_ns)  # selector, namespaceSelector, serviceAccounts
    if sel is not None:
        if isinstance(sel, Nothing):
            return None
        base.append(f"-m set --match-set {refs.selector_set(sel)} {side}")
    if entity.not_selector is not None:
        nsel = parse_calico(entity.not_selector, where="notSelector")
        if not isinstance(nsel, Nothing):  # "not nothing" is no constraint
            base.append(f"-m set ! --match-set {refs.selector_set(nsel)} {side}")
    if not entity.ports and not entity.not_ports:
        return [" ".join(base)]
    if proto is None or proto not in _PORT_PROTOS:   # the model gives ports only to a rule with a port protocol
        raise ValueError("ports need protocol TCP, UDP, SCTP or UDPLite")
    return _port_frags(refs, entity, side, proto, base)


def _port_frags(refs: _Refs, entity: CalicoEntityRule, side: str, proto: str, base: list[str]) -> list[str]:
    """:func:`_entity_frags` of a side with ports or notPorts: ``base`` AND not in notPorts, AND in any of
    ports (a multiport match per chunk of numbers, a set per named port: OR-alternatives)."""
    pflag, dirs = ("--sports" if side == "src" else "--dports"), f"{side},{side}"
    base = [*base, *(f"-m set ! --match-set {refs.named_port_set(proto, name)} {dirs}"
                     for name in _names(entity.not_ports)),
            *(f"-m multiport ! {pflag} {chunk}" for chunk in multiport_chunks(_numbers(entity.not_ports)))]
    if not entity.ports:
        return [" ".join(base)]
    alts = [f"-m multiport {pflag} {chunk}" for chunk in multiport_chunks(_numbers(entity.ports))]
    alts += [f"-m set --match-set {refs.named_port_set(proto, name)} {dirs}" for name in _names(entity.ports)]
    head = " ".join(base)
    return [f"{head} {a}" if head else a for a in alts]



def _gnp_rules(refs: _Refs, pol: Resource, direction: str) -> list[str]:
    """Rule bodies of one Calico policy (global or namespaced) for one direction, in order (first
    Allow/Deny/Pass decides)."""
    out: list[str] = []
    pol_ns = policy_namespace(pol)
    spec = calico_policy_spec(pol)
    for rule in spec.ingress if direction == "Ingress" else spec.egress:
        action, proto = rule.action, rule.protocol
        if proto == ICMPV6:
            continue  # an ICMPv6 rule matches no IPv4 packet
        head: list[str] = []
        if proto is not None:
            head.append(f"-p {proto}")
        if rule.not_protocol is not None and rule.not_protocol != ICMPV6:   # every IPv4 packet is "not ICMPv6"
            head.append(f"! -p {rule.not_protocol}")
        if rule.icmp is not None:
            code = rule.icmp.code
            head.append(f"-m icmp --icmp-type {rule.icmp.type}" + (f"/{code}" if code is not None else ""))
        src = _entity_frags(refs, rule.source, "src", proto, pol_ns)
        dst = _entity_frags(refs, rule.destination, "dst", proto, pol_ns)
        if src is None or dst is None:
            continue
        if action == "Allow":
            target, after = SET_ACCEPT, [RETURN_IF_ACCEPTED]
        elif action == "Pass":
            target, after = SET_PASS, [RETURN_IF_PASSED]
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


def compile_one(pol: Resource) -> CompiledPolicy | None:
    """One policy (any of the three kinds) on its own: its chains, the sets they name and, for a Kubernetes
    NetworkPolicy, its atoms. None (logged) when its spec cannot be compiled: the policy is then absent."""
    refs = _Refs()
    key = policy_key(pol)
    try:
        if pol.kind in ("GlobalNetworkPolicy", "CalicoNetworkPolicy"):
            types = gnp_types(pol)
            applies = policy_applies(pol)
            # Chain name prefixes: gi/go for global, ci/co for namespaced (own namespace/name identity).
            pre = "g" if pol.kind == "GlobalNetworkPolicy" else "c"
            ident = calico_policy_name(pol)
            chains = {d: (chain_name(f"{pre}i" if d == "Ingress" else f"{pre}o", ident), _gnp_rules(refs, pol, d))
                      for d in types}
            sort_key: tuple[Any, ...] = (0, gnp_order(pol), ident)
        else:
            types = policy_types(pol)
            applies = all_of(LabelOp(CALICO_NAMESPACE_LABEL, "==", (pol.namespace or "",)),
                             parse_label_selector(kubernetes_policy_spec(pol).pod_selector, where="podSelector"))
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
        return CompiledPolicy(key, pol, pol.kind == "GlobalNetworkPolicy", sort_key, types, applies, hashed,
                              refs.sets, tiered=True, residual=frozenset(types), chain_sets=frozenset(refs.sets))
    return CompiledPolicy(key, pol, False, sort_key, types, applies, hashed, refs.sets, atoms=atoms,
                          residual=frozenset(d for d in types if chains[d][1]), chain_sets=chain_sets)


# -- the incremental compiler -----------------------------------------------------------------------------
class PolicyCompiler:
    """Owns a node's :class:`PolicyIndex` and :class:`RenderCache`, so recompiling is cheap; ``compile`` is a
    pure function.

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
        self._index = PolicyIndex(compile_one)
        self._render = RenderCache()
        self.compiles = 0

    @property
    def policies_recompiled(self) -> int:
        """Policies compiled since this compiler was made."""
        return self._index.policies_recompiled

    def compile(self, local_endpoints: Iterable[Resource], all_endpoints: Iterable[Resource],
                policies: Iterable[Resource], namespaces: Iterable[Resource], *,
                iface_prefix: str = WORKLOAD_IFACE_PREFIX, reverse_path_filter: bool = True,
                endpoint_to_host_action: str = "Drop",
                failsafe_ports: Sequence[tuple[str, int]] = (),
                fail_closed: frozenset[Hashable] = frozenset(),
                host_endpoints: Iterable[Resource] = (),
                host_failsafe_in: Sequence[tuple[str, int]] = (),
                host_failsafe_out: Sequence[tuple[str, int]] = ()) -> PolicyProgram:
        """The whole policy dataplane of one node (see :mod:`policy.render` for its layout).

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
        # Rendered first: a bad action or failsafe port raises before the index changes.
        wl_to_host = hash_rules(CHAIN_WL_TO_HOST, wl_to_host_rules(endpoint_to_host_action, failsafe_ports))
        t0 = time.perf_counter()
        before = self._index.policies_recompiled
        self.compiles += 1
        changes = self._index.sync(namespaces, policies, all_endpoints, local_endpoints)

        wildcard = f"{iface_prefix}+"
        hosts = self._render.host_endpoints(host_endpoints, self._index.ordered, changes.policies_changed,
                                            host_failsafe_in, host_failsafe_out)
        filter_chains = base_chains(wildcard, wl_to_host, hosts)
        ipsets: IpsetValues = {}
        used: dict[str, tuple[CompiledPolicy, str]] = {}
        keep: set[str] = set()
        ordered_locals = sorted(changes.local.items(), key=lambda kv: str(workload_spec(kv[1]).interface_name))
        self._render.endpoints(ordered_locals, fail_closed, self._index, changes, filter_chains, ipsets, used)
        self._index.tier_sets(self._render.tier_sets(), changes.dirty, ipsets, keep)
        filter_chains.update(self._render.dispatch(ordered_locals, fail_closed, iface_prefix))
        # Only sets that a programmed rule references are emitted (reference counting, as Felix does).
        for chain, (c, d) in used.items():
            filter_chains[chain] = c.chains[d][1]
        self._index.emit_sets([*(c for c, _ in used.values()), *(p for p, _ in hosts.policies)], changes.dirty,
                              ipsets, keep)

        chains, hooks = program_tables(filter_chains, wildcard, reverse_path_filter, hosts)
        policies_count, global_count = self._index.policy_counts()
        program = PolicyProgram(chains=chains, hooks=hooks, policies=policies_count, global_policies=global_count,
                                ipsets=dict(sorted(ipsets.items())), ipv6_unpoliced=self._render.ipv6_unpoliced(),
                                policies_recompiled=self._index.policies_recompiled - before,
                                compile_seconds=time.perf_counter() - t0)
        _log.debug("policy compiled policies=%d recompiled=%d rules=%d seconds=%.4f", program.policies,
                   program.policies_recompiled, program.rule_count, program.compile_seconds)
        return program


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

