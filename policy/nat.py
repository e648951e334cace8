"""policy.nat: Calico's ``natOutgoing`` as l3net's own chains of the ``nat`` table, and their ipsets.

Layout (Felix's ``cali-nat-outgoing``, with l3net's marks)::

    POSTROUTING -> l3n-POSTROUTING               (one hook rule, at the top)
    l3n-POSTROUTING -> l3n-nat-outgoing
    l3n-nat-outgoing: -m set --match-set l3n4masq-ipam-pools src
                      -m set ! --match-set l3n4all-ipam-pools dst -j MASQUERADE

so a packet from a pod of a ``natOutgoing`` pool leaves with the node's address when it goes
anywhere outside every pool (pod-to-pod traffic keeps its source). Nothing is rendered when no
pool has ``natOutgoing``: the driver then removes the chains and the hook, and the ipsets go
with them. The host's own nat rules are never part of the output, so never touched.

Pure: the output depends on the pool lists only, and is rendered from parsed networks
(never from the stored strings), IPv4 only like the rest of the policy dataplane.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from l3net.constants import CHAIN_PREFIX, IPSET_PREFIX
from policy.compiler import PolicyProgram
from policy.rules import hash_rules

__all__ = ["CHAIN_NAT_OUTGOING", "CHAIN_NAT_POSTROUTING", "IPSET_ALL_POOLS", "IPSET_MASQ_POOLS", "NAT_TABLE",
           "NatProgram", "render_nat_outgoing", "with_nat"]

NAT_TABLE = "nat"
CHAIN_NAT_POSTROUTING = f"{CHAIN_PREFIX}POSTROUTING"
CHAIN_NAT_OUTGOING = f"{CHAIN_PREFIX}nat-outgoing"
# Fixed names (Felix's cali40all-ipam-pools / cali40masq-ipam-pools); the compiler's hashed sets
# always carry a ':' after their tag, so these can never collide with one.
IPSET_ALL_POOLS = f"{IPSET_PREFIX}4all-ipam-pools"
IPSET_MASQ_POOLS = f"{IPSET_PREFIX}4masq-ipam-pools"


@dataclass(frozen=True)
class NatProgram:
    """The ``nat`` table slice of one node: ``chains``/``hooks`` for table ``nat``, and ``ipsets``.

    Same shapes as ``policy.compiler.PolicyProgram`` (rule bodies with their ``l3n:`` hash comment,
    ``ipsets[name] = (type, members)``), so the policy side applies both in one transaction per table.
    """

    chains: dict[str, list[str]] = field(default_factory=dict)
    hooks: dict[str, list[str]] = field(default_factory=dict)
    ipsets: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)


def _members(nets: Sequence[str]) -> frozenset[str]:
    out = set()
    for text in nets:
        net = ipaddress.ip_network(text, strict=False)
        if net.version != 4:
            raise ValueError(f"natOutgoing: {text} is not an IPv4 network")
        # ipset's own spelling; hash:net refuses a /0, which becomes its two /1 halves (as Calico does).
        halves = net.subnets(prefixlen_diff=1) if net.prefixlen == 0 else (net,)
        out.update(str(h.network_address) if h.prefixlen == 32 else str(h) for h in halves)
    return frozenset(out)


def render_nat_outgoing(masq_pools: Sequence[str], all_pools: Sequence[str]) -> NatProgram:
    """The nat table slice for these pools (``felix.desired.NatOutgoing``); empty when ``masq_pools`` is."""
    if not masq_pools:
        return NatProgram()
    return NatProgram(
        chains={
            CHAIN_NAT_POSTROUTING: hash_rules(CHAIN_NAT_POSTROUTING, [f"-j {CHAIN_NAT_OUTGOING}"]),
            CHAIN_NAT_OUTGOING: hash_rules(CHAIN_NAT_OUTGOING, [
                f"-m set --match-set {IPSET_MASQ_POOLS} src -m set ! --match-set {IPSET_ALL_POOLS} dst "
                "-j MASQUERADE"]),
        },
        hooks={"POSTROUTING": hash_rules("POSTROUTING", [f"-j {CHAIN_NAT_POSTROUTING}"])},
        ipsets={IPSET_ALL_POOLS: ("hash:net", _members([*all_pools, *masq_pools])),
                IPSET_MASQ_POOLS: ("hash:net", _members(masq_pools))},
    )


def with_nat(program: PolicyProgram, nat: NatProgram) -> PolicyProgram:
    """``program`` plus the nat table slice, as one program for the policy drivers.

    The ``nat`` table is always present (empty when no pool has natOutgoing), so the driver
    reads it and removes chains and hooks it left there before, a restart included.
    """
    clash = set(program.ipsets) & set(nat.ipsets)
    if clash:
        raise ValueError(f"ipsets {sorted(clash)}: rendered by both the policy compiler and the nat renderer")
    return replace(program, chains={**program.chains, NAT_TABLE: dict(nat.chains)},
                   hooks={**program.hooks, NAT_TABLE: dict(nat.hooks)},
                   ipsets=dict(sorted({**program.ipsets, **nat.ipsets}.items())))
