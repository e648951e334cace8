"""policy.compiler: Kubernetes NetworkPolicy -> iptables chains and ipsets for one node. Pure.

Layout of the filter table (all our chains start with ``l3n-``; the kernel
chains get one hook rule each, inserted at the top):

* ``FORWARD -> l3n-FORWARD``: ``-i cali+`` jumps to ``l3n-from-wl-dispatch``,
  ``-o cali+`` to ``l3n-to-wl-dispatch``; a packet that comes back from both is
  accepted. Dispatch chains *goto* the endpoint chain of the interface, so an
  endpoint chain's RETURN means "allowed by this side"; the last dispatch rule
  drops: an interface that looks like a workload but is not known yet carries
  nothing (fail closed, so a new pod is isolated before its first packet).
* ``INPUT -> l3n-INPUT``: workload-to-host traffic passes the workload's egress
  policy, then goes back to the host's own INPUT rules.
* ``OUTPUT -> l3n-OUTPUT``: host-to-local-workload traffic is allowed (kubelet
  probes, as Kubernetes requires); the chain is the seam for host endpoints.
* ``l3n-fw-<iface>`` (from workload, egress) starts with the anti-spoofing
  check (the source must be one of the workload's own addresses; it comes
  before the conntrack accept so a forged source cannot ride another pod's
  flow), then ESTABLISHED/RELATED accept, INVALID drop, then the policies.
* ``l3n-tw-<iface>`` (to workload, ingress): conntrack first, then the policies.
* With policies: clear the accept mark, jump to each ``l3n-pi-*``/``l3n-po-*``
  policy chain, RETURN as soon as one set the mark, DROP at the end. Without a
  policy for that direction the chain just returns (Kubernetes default allow).
* raw ``PREROUTING -> l3n-PREROUTING``: a strict reverse-path check for packets
  from ``cali+`` (a second anti-spoofing layer, and it acts before conntrack).

Every rule carries ``-m comment --comment "l3n:<hash>"``; the hash chains over
the previous rule's hash (seeded with the chain name, Felix style), so the
driver diffs chains by comparing hash lists and never parses rule bodies.

Selector members go into ``hash:net`` ipsets of member addresses; named ports
into ``hash:ip,port`` sets of ``ip,proto:port`` of every workload exposing the
name. Set and chain names are deterministic hashes of their canonical meaning.

Invalid content is treated as absent, never raised: a policy whose spec cannot
be compiled is logged and skipped (the valid ones stay enforced); a selector
that cannot be parsed matches nothing. IPv4 only for now.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from l3net.constants import CHAIN_PREFIX, IPSET_PREFIX, RULE_HASH_COMMENT_PREFIX, WORKLOAD_IFACE_PREFIX
from l3net.model import Resource
from policy.model import labels_of_namespace, namespace_labels, policy_types, workload_ips, workload_ports
from policy.selectors import canonical_string, parse_label_selector

_log = logging.getLogger(__name__)

__all__ = ["ACCEPT_MARK", "CHAIN_FORWARD", "CHAIN_FROM_DISPATCH", "CHAIN_INPUT", "CHAIN_OUTPUT",
           "CHAIN_PREROUTING", "CHAIN_TO_DISPATCH", "MAX_CHAIN_LEN", "MAX_IPSET_LEN", "PolicyProgram",
           "compile_policy", "hash_rules"]

MAX_CHAIN_LEN = 28
MAX_IPSET_LEN = 31
# One mark bit, chosen clear of kube-proxy's 0x4000/0x8000 and inside Felix's 0xffff0000 mask.
ACCEPT_MARK = 0x10000
_MARK = f"0x{ACCEPT_MARK:x}"

CHAIN_FORWARD = f"{CHAIN_PREFIX}FORWARD"
CHAIN_INPUT = f"{CHAIN_PREFIX}INPUT"
CHAIN_OUTPUT = f"{CHAIN_PREFIX}OUTPUT"
CHAIN_PREROUTING = f"{CHAIN_PREFIX}PREROUTING"
CHAIN_FROM_DISPATCH = f"{CHAIN_PREFIX}from-wl-dispatch"
CHAIN_TO_DISPATCH = f"{CHAIN_PREFIX}to-wl-dispatch"

_CT_ACCEPT = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
_CT_INVALID = "-m conntrack --ctstate INVALID -j DROP"
_SET_MARK = f"-j MARK --set-xmark {_MARK}/{_MARK}"
_CLEAR_MARK = f"-j MARK --set-xmark 0x0/{_MARK}"
_RETURN_IF_MARK = f"-m mark --mark {_MARK}/{_MARK} -j RETURN"


@dataclass
class PolicyProgram:
    """The policy dataplane of one node, as data.

    ``chains[table][chain]`` and ``hooks[table][kernel_chain]`` are rule bodies
    (iptables-restore syntax after ``-A <chain>``), each already carrying its
    ``l3n:`` hash comment; ``ipsets[name] = (type, members)``.
    """

    chains: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    hooks: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    ipsets: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    policies: int = 0

    @property
    def rule_count(self) -> int:
        return sum(len(rules) for table in self.chains.values() for rules in table.values())

    @property
    def ipset_members(self) -> int:
        return sum(len(members) for _, members in self.ipsets.values())


def _digest(text: str, length: int) -> str:
    raw = hashlib.sha224(text.encode()).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")[:length]


def hash_rules(chain: str, bodies: Sequence[str]) -> list[str]:
    """Prefix every rule with its chained hash comment (a rule's hash covers it and all rules before it)."""
    prev = _digest(chain, 16)
    out = []
    for body in bodies:
        prev = _digest(prev + body, 16)
        out.append(f'-m comment --comment "{RULE_HASH_COMMENT_PREFIX}{prev}" {body}')
    return out


def _chain_name(kind: str, ident: str) -> str:
    name = f"{CHAIN_PREFIX}{kind}-{ident}"
    if len(name) <= MAX_CHAIN_LEN:
        return name
    base = f"{CHAIN_PREFIX}{kind}_"
    return base + _digest(ident, MAX_CHAIN_LEN - len(base))


def _ipset_name(tag: str, key: str) -> str:
    base = f"{IPSET_PREFIX}{tag}:"
    return base + _digest(f"{tag}:{key}", MAX_IPSET_LEN - len(base))


class _Builder:
    """Accumulates ipsets while rules are rendered; one per compile call."""

    def __init__(self, all_endpoints: Sequence[Resource], ns_labels: Mapping[str, Mapping[str, str]]):
        self.all_endpoints = all_endpoints
        self.ns_labels = ns_labels
        self.ipsets: dict[str, tuple[str, frozenset[str]]] = {}

    def peer_set(self, pol_ns: str, pod_sel: Any, ns_sel: Any) -> str:
        psel = parse_label_selector(pod_sel, where="podSelector") if pod_sel is not None else None
        nsel = parse_label_selector(ns_sel, where="namespaceSelector") if ns_sel is not None else None
        key = (f"ns={pol_ns if nsel is None else '*'};nssel={canonical_string(nsel) if nsel else '-'};"
               f"podsel={canonical_string(psel) if psel else '-'}")
        name = _ipset_name("s", key)
        if name not in self.ipsets:
            members = set()
            for wep in self.all_endpoints:
                wns = wep.namespace or ""
                if nsel is None and wns != pol_ns:
                    continue
                if nsel is not None and not nsel.matches(labels_of_namespace(self.ns_labels, wns)):
                    continue
                if psel is not None and not psel.matches(wep.labels):
                    continue
                members.update(workload_ips(wep))
            self.ipsets[name] = ("hash:net", frozenset(members))
        return name

    def net_set(self, tag: str, nets: Iterable[str]) -> str:
        members = frozenset(_net(n) for n in nets)
        name = _ipset_name(tag, ",".join(sorted(members)))
        self.ipsets[name] = ("hash:net", members)
        return name

    def named_port_set(self, protocol: str, port_name: str) -> str:
        name = _ipset_name("n", f"{protocol}:{port_name}")
        if name not in self.ipsets:
            members = set()
            proto = protocol.upper()
            for wep in self.all_endpoints:
                for pname, pproto, num in workload_ports(wep):
                    if pname == port_name and pproto == proto:
                        members.update(f"{ip},{protocol}:{num}" for ip in workload_ips(wep))
            self.ipsets[name] = ("hash:ip,port", frozenset(members))
        return name


def _net(text: str) -> str:
    """A network in ipset's own spelling: a host network is written without ``/32``."""
    net = ipaddress.ip_network(str(text), strict=False)
    if net.version != 4:
        raise ValueError(f"{text}: only IPv4 is supported")
    return str(net.network_address) if net.prefixlen == 32 else str(net)


def _peer_matches(b: _Builder, peer: Mapping[str, Any], pol_ns: str, side: str) -> str | None:
    """The match fragment for one peer on ``side`` (``src``/``dst``); None when it can match nothing."""
    flag = "-s" if side == "src" else "-d"
    block = peer.get("ipBlock")
    if block is not None:
        cidr = ipaddress.ip_network(block["cidr"], strict=False)
        if cidr.version != 4:
            return None  # an IPv6 block matches no IPv4 packet
        frag = f"{flag} {cidr}"
        excepts = [e for e in block.get("except") or [] if ipaddress.ip_network(e, strict=False).version == 4]
        if excepts:
            frag += f" -m set ! --match-set {b.net_set('e', excepts)} {side}"
        return frag
    if peer.get("podSelector") is None and peer.get("namespaceSelector") is None:
        return None  # validation refuses an empty peer; if one gets here it matches nothing
    return f"-m set --match-set {b.peer_set(pol_ns, peer.get('podSelector'), peer.get('namespaceSelector'))} {side}"


def _port_matches(b: _Builder, port: Mapping[str, Any]) -> str:
    proto = str(port.get("protocol") or "TCP").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"protocol {proto!r} is not TCP, UDP or SCTP")
    number = port.get("port")
    if number is None:
        return f"-p {proto}"
    if isinstance(number, bool):
        raise ValueError("port must be a number or a name")
    if isinstance(number, int):
        end = port.get("endPort")
        rng = f"{number}:{end}" if isinstance(end, int) and end > number else str(number)
        return f"-p {proto} -m {proto} --dport {rng}"
    return f"-p {proto} -m set --match-set {b.named_port_set(proto, str(number))} dst,dst"


def _policy_rules(b: _Builder, pol: Resource, direction: str) -> list[str]:
    """Rule bodies of one policy for one direction; each sets the accept mark."""
    rules_key, peers_key, side = (("ingress", "from", "src") if direction == "Ingress" else ("egress", "to", "dst"))
    pol_ns = pol.namespace or ""
    out: list[str] = []
    for rule in pol.spec.get(rules_key) or []:
        peers = rule.get(peers_key) or []
        peer_frags: list[str] = [""] if not peers else [
            f for f in (_peer_matches(b, p, pol_ns, side) for p in peers) if f is not None]
        ports = rule.get("ports") or []
        port_frags = [""] if not ports else [_port_matches(b, p) for p in ports]
        for pf in peer_frags:
            for qf in port_frags:
                out.append(" ".join(x for x in (pf, qf, _SET_MARK) if x))
    return out


@dataclass(frozen=True)
class _Compiled:
    """A policy that compiled: its selector and its rules per direction."""

    resource: Resource
    types: tuple[str, ...]
    rules: dict[str, list[str]]
    sets: dict[str, tuple[str, frozenset[str]]]


def _compile_one(pol: Resource, all_endpoints: Sequence[Resource],
                 ns_labels: Mapping[str, Mapping[str, str]]) -> _Compiled | None:
    b = _Builder(all_endpoints, ns_labels)
    try:
        types = policy_types(pol.spec)
        rules = {d: _policy_rules(b, pol, d) for d in types}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        _log.warning("policy ignored: cannot compile policy=%s error=%s", pol.ref, exc)
        return None
    return _Compiled(pol, types, rules, b.ipsets)


def compile_policy(local_endpoints: Iterable[Resource], all_endpoints: Iterable[Resource],
                   policies: Iterable[Resource], namespaces: Iterable[Resource], *,
                   iface_prefix: str = WORKLOAD_IFACE_PREFIX, reverse_path_filter: bool = True) -> PolicyProgram:
    """The whole policy dataplane of one node (see the module docstring for its layout)."""
    locals_ = sorted((w for w in local_endpoints if w.kind == "WorkloadEndpoint" and w.spec.get("interfaceName")),
                     key=lambda w: str(w.spec["interfaceName"]))
    alls = [w for w in all_endpoints if w.kind == "WorkloadEndpoint"]
    ns_labels = namespace_labels(namespaces)
    compiled = [c for c in (_compile_one(p, alls, ns_labels)
                            for p in sorted((p for p in policies if p.kind == "NetworkPolicy"),
                                            key=lambda p: (p.namespace or "", p.name)))
                if c is not None]
    wildcard = f"{iface_prefix}+"
    filter_chains: dict[str, list[str]] = {
        CHAIN_FORWARD: [f"-i {wildcard} -j {CHAIN_FROM_DISPATCH}", f"-o {wildcard} -j {CHAIN_TO_DISPATCH}",
                        f"-i {wildcard} -j ACCEPT", f"-o {wildcard} -j ACCEPT"],
        CHAIN_INPUT: [f"-i {wildcard} -j {CHAIN_FROM_DISPATCH}"],
        CHAIN_OUTPUT: [f"-o {wildcard} -j RETURN"],
    }
    ipsets: dict[str, tuple[str, frozenset[str]]] = {}
    from_dispatch: list[str] = []
    to_dispatch: list[str] = []
    used_policy_chains: dict[str, list[str]] = {}
    for wep in locals_:
        iface = str(wep.spec["interfaceName"])
        selected = {d: [c for c in compiled if d in c.types and c.resource.namespace == wep.namespace
                        and parse_label_selector(c.resource.spec.get("podSelector") or {}).matches(wep.labels)]
                    for d in ("Ingress", "Egress")}
        fw, tw = _chain_name("fw", iface), _chain_name("tw", iface)
        from_dispatch.append(f"-i {iface} -g {fw}")
        to_dispatch.append(f"-o {iface} -g {tw}")
        ips = workload_ips(wep)
        if not ips:
            fw_rules = ["-j DROP"]  # a workload without an address may not send at all
        elif len(ips) == 1:
            fw_rules = [f"! -s {ips[0]}/32 -j DROP"]
        else:
            own = _ipset_name("w", iface)
            ipsets[own] = ("hash:net", frozenset(ips))
            fw_rules = [f"-m set ! --match-set {own} src -j DROP"]
        fw_rules += [_CT_ACCEPT, _CT_INVALID]
        tw_rules = [_CT_ACCEPT, _CT_INVALID]
        for direction, rules, kind in (("Egress", fw_rules, "po"), ("Ingress", tw_rules, "pi")):
            if not selected[direction]:
                continue
            rules.append(_CLEAR_MARK)
            for c in selected[direction]:
                chain = _chain_name(kind, f"{c.resource.namespace}/{c.resource.name}")
                used_policy_chains[chain] = c.rules[direction]
                ipsets.update(c.sets)
                rules += [f"-j {chain}", _RETURN_IF_MARK]
            rules.append("-j DROP")
        filter_chains[fw] = fw_rules
        filter_chains[tw] = tw_rules
    filter_chains[CHAIN_FROM_DISPATCH] = [*from_dispatch, "-j DROP"]
    filter_chains[CHAIN_TO_DISPATCH] = [*to_dispatch, "-j DROP"]
    filter_chains.update(used_policy_chains)
    # Only sets that a programmed rule references are kept (reference counting, as Felix does).
    referenced = "\n".join(r for rules in filter_chains.values() for r in rules)
    ipsets = {n: v for n, v in ipsets.items() if n in referenced}
    program = PolicyProgram(policies=len(compiled), ipsets=ipsets)
    program.chains["filter"] = {name: hash_rules(name, rules) for name, rules in sorted(filter_chains.items())}
    program.hooks["filter"] = {k: hash_rules(k, [f"-j {c}"])
                               for k, c in (("FORWARD", CHAIN_FORWARD), ("INPUT", CHAIN_INPUT),
                                            ("OUTPUT", CHAIN_OUTPUT))}
    if reverse_path_filter:
        program.chains["raw"] = {CHAIN_PREROUTING: hash_rules(
            CHAIN_PREROUTING, [f"-i {wildcard} -m rpfilter --invert -j DROP"])}
        program.hooks["raw"] = {"PREROUTING": hash_rules("PREROUTING", [f"-j {CHAIN_PREROUTING}"])}
    return program
