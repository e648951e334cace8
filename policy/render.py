"""policy.render: compiled policies, tiers, endpoints and interfaces -> iptables-restore rule bodies. Pure.

Every function here is a pure function of its arguments: no state, no caches (a caller that
wants to skip work it did before, :mod:`policy.render_cache`, remembers the results itself).
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
* Policies come in two tiers, as in Calico (see :mod:`policy.evaluator`): Calico's
  policies first, by ``order`` (each policy's chain is :mod:`policy.compiler`'s): clear the
  accept and pass marks, jump to each ``l3n-gi-*``/``l3n-go-*`` chain unless a previous one
  passed, RETURN as soon as one set the accept mark, DROP at the end of the tier unless one
  passed. Then the Kubernetes tier (:class:`Tier`): a hit in its ``l3nk:`` or ``l3nu:`` set
  RETURNs, then the policies' residual ``l3n-pi-*``/``l3n-po-*`` chains, RETURN as soon as
  one set the accept mark; DROP at the end. A direction no policy selects just returns
  (allowed).
* raw ``PREROUTING -> l3n-PREROUTING``: a strict reverse-path check for packets
  from ``cali+`` (a second anti-spoofing layer, and it acts before conntrack).

Every rule carries ``-m comment --comment "l3n:<hash>"`` (:func:`policy.rules.hash_rules`), so
the driver diffs chains by comparing hash lists and never parses rule bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from l3net.constants import CHAIN_PREFIX, WORKLOAD_IFACE_PREFIX
from policy.compiled import Atom, CompiledPolicy
from policy.host_endpoints import HostEndpointRender
from policy.rules import (
    CLEAR_ACCEPT,
    CLEAR_BOTH,
    CT_ACCEPT,
    CT_INVALID,
    RETURN_IF_ACCEPTED,
    UNLESS_PASSED,
    chain_name,
    failsafe_rules,
    hash_rules,
    ipset_name,
)

__all__ = ["CHAIN_FORWARD", "CHAIN_FROM_DISPATCH", "CHAIN_INPUT", "CHAIN_OUTPUT", "CHAIN_PREROUTING",
           "CHAIN_TO_DISPATCH", "CHAIN_WL_TO_HOST", "DISPATCH_SPLIT", "ENDPOINT_TO_HOST_ACTIONS", "Tier",
           "base_chains", "dispatch_chains", "dispatch_leaf", "endpoint_chains", "endpoint_set_name", "k8s_tier",
           "program_tables", "wl_to_host_rules"]

CHAIN_FORWARD = f"{CHAIN_PREFIX}FORWARD"
CHAIN_INPUT = f"{CHAIN_PREFIX}INPUT"
CHAIN_OUTPUT = f"{CHAIN_PREFIX}OUTPUT"
CHAIN_PREROUTING = f"{CHAIN_PREFIX}PREROUTING"
CHAIN_FROM_DISPATCH = f"{CHAIN_PREFIX}from-wl-dispatch"
CHAIN_TO_DISPATCH = f"{CHAIN_PREFIX}to-wl-dispatch"
CHAIN_WL_TO_HOST = f"{CHAIN_PREFIX}wl-to-host"
# Calico's DefaultEndpointToHostAction values and the iptables target each becomes.
ENDPOINT_TO_HOST_ACTIONS = {"Drop": "DROP", "Accept": "ACCEPT", "Return": "RETURN"}
DISPATCH_SPLIT = 32  # more local interfaces than this: the dispatch chains become a tree (see dispatch_chains)

Tables = dict[str, dict[str, list[str]]]


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


def base_chains(wildcard: str, wl_to_host: list[str], hosts: HostEndpointRender) -> dict[str, list[str]]:
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


@dataclass(frozen=True)
class Tier:
    """The Kubernetes tier of one endpoint and direction: two set lookups decide what the atoms of its
    policies allow, then the chains of the policies with residual rules are walked."""

    port_set: str | None  # hash:net,port of (peer net, protocol:port), from the atoms with a port
    port_atoms: tuple[Atom, ...]
    any_set: str | None  # hash:net of peer nets allowed every protocol and port
    any_atoms: tuple[Atom, ...]
    chains: tuple[str, ...]  # the residual policy chains, in policy order


def k8s_tier(nps: Sequence[CompiledPolicy], direction: str) -> Tier:
    """The Kubernetes tier of an endpoint whose applying NetworkPolicies are ``nps``, for ``direction``."""
    atoms: set[Atom] = set()
    for c in nps:
        atoms.update(c.atoms.get(direction, ()))
    port_atoms = tuple(sorted(a for a in atoms if a[2]))
    any_atoms = tuple(sorted(a for a in atoms if not a[2]))
    # Named by content, so endpoints whose policies say the same share one set (and a peer's label change
    # only moves members).
    port_set = ipset_name("k", ";".join(f"{k}{p},{proto}:{n}" for k, p, proto, n in port_atoms)) \
        if port_atoms else None
    any_set = ipset_name("u", ";".join(f"{k}{p}" for k, p, _, _ in any_atoms)) if any_atoms else None
    return Tier(port_set, port_atoms, any_set, any_atoms,
                tuple(c.chains[direction][0] for c in nps if direction in c.residual))


def endpoint_set_name(iface: str) -> str:
    """The ``hash:net`` set of a workload's own addresses (its anti-spoofing check when it has several)."""
    return ipset_name("w", iface)


def endpoint_chains(iface: str, ips: tuple[str, ...], calico: tuple[tuple[str, ...], tuple[str, ...]],
                    k8s: tuple[Tier | None, Tier | None]) -> tuple[str, list[str], str, list[str]]:
    """(fw chain, its rules, tw chain, its rules) of one workload interface.

    ``calico``: the Calico tier's policy chains, ``k8s``: the Kubernetes tier (None: no NetworkPolicy
    applies), each (egress, ingress).
    """
    fw, tw = chain_name("fw", iface), chain_name("tw", iface)
    if not ips:
        fw_rules = ["-j DROP"]  # a workload without an address may not send at all
    elif len(ips) == 1:
        fw_rules = [f"! -s {ips[0]}/32 -j DROP"]
    else:
        fw_rules = [f"-m set ! --match-set {endpoint_set_name(iface)} src -j DROP"]
    fw_rules += [CT_ACCEPT, CT_INVALID]
    tw_rules = [CT_ACCEPT, CT_INVALID]
    for gnps, tier, side, rules in ((calico[0], k8s[0], "dst", fw_rules), (calico[1], k8s[1], "src", tw_rules)):
        if gnps:
            rules.append(CLEAR_BOTH)
            for chain in gnps:
                rules += [f"{UNLESS_PASSED} -j {chain}", RETURN_IF_ACCEPTED]
            rules.append(f"{UNLESS_PASSED} -j DROP")  # end of tier: drop unless a policy passed
        if tier is not None:
            rules += _k8s_tier_rules(tier, side, after_calico=bool(gnps))
    return fw, hash_rules(fw, fw_rules), tw, hash_rules(tw, tw_rules)


def _k8s_tier_rules(tier: Tier, side: str, after_calico: bool) -> list[str]:
    """The Kubernetes tier in an endpoint chain: a union, so any set hit allows (RETURN: this side allows),
    then the policies' residual chains. The Calico tier before it (``after_calico``) already cleared the
    accept mark."""
    rules = []
    if tier.port_set is not None:
        rules.append(f"-m set --match-set {tier.port_set} {side},dst -j RETURN")
    if tier.any_set is not None:
        rules.append(f"-m set --match-set {tier.any_set} {side} -j RETURN")
    if tier.chains and not after_calico:
        rules.append(CLEAR_ACCEPT)
    for chain in tier.chains:
        rules += [f"-j {chain}", RETURN_IF_ACCEPTED]
    rules.append("-j DROP")
    return rules


def dispatch_leaf(name: str, direction: str, kind: str, ifaces: tuple[str, ...]) -> list[str]:
    """One sub-chain of the dispatch tree: a goto per interface, then DROP."""
    return hash_rules(name, _dispatch_rules(direction, kind, ifaces))


def _dispatch_rules(direction: str, kind: str, ifaces: Sequence[str]) -> list[str]:
    """A dispatch chain's rules (the flat root, or one sub-chain of the tree): a goto per interface, then DROP."""
    return [*(f"{direction} {i} -g {chain_name(kind, i)}" for i in ifaces), "-j DROP"]


def dispatch_chains(ifaces: tuple[str, ...], iface_prefix: str = WORKLOAD_IFACE_PREFIX,
                    leaf: Callable[[str, str, str, tuple[str, ...]], list[str]] = dispatch_leaf,
                    ) -> dict[str, list[str]]:
    """The from- and to-dispatch chains of the programmed interfaces ``ifaces``: one goto each, then DROP.

    Past ``DISPATCH_SPLIT`` interfaces they become a two-level tree, as Calico's: the root chains go to
    one sub-chain per interface-name prefix (``-i cali9+``), each holding that prefix's interfaces, so a
    pod that comes or goes rewrites a handful of rules, not two chains as long as the node's pods.
    ``leaf`` renders one sub-chain (:func:`dispatch_leaf`, or a caller's memo of it).
    """
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
            chains[name] = leaf(name, direction, kind, tuple(members))
        chains[root] = hash_rules(root, [*top, "-j DROP"])
    return chains


def program_tables(filter_chains: dict[str, list[str]], wildcard: str, reverse_path_filter: bool,
                   hosts: HostEndpointRender) -> tuple[Tables, Tables]:
    """(chains, hooks) by table: the rendered filter chains, with the kernel hooks (and rpfilter) that reach
    them and the host endpoints' raw and mangle chains."""
    chains: Tables = {"filter": dict(sorted(filter_chains.items()))}
    hooks: Tables = {
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
    return chains, hooks
