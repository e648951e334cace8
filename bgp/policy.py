"""bgp.policy: which routes a node takes from a peer and which it sends to it.

Pure, deterministic, no I/O. Two layers, evaluated per path:

1. **Calico's BGPFilter** (``BGPPeer.filters``): each filter's rules for the family are
   tried in order, filter after filter; the first rule whose ``cidr``/``matchOperator``
   and ``prefixLength`` match decides (``Accept`` / ``Reject``). The rules come from the
   model's typed spec (:mod:`l3net.model.bgpfilter_spec`), parsed once there. A peer that
   names a filter that does not exist, or one the model refused, gets a reject-all rule
   instead (fail closed, STYLE 7).
2. **Safe defaults** that need no configuration and that no filter can lift:

   - never a route whose next hop is a local workload address;
   - never a route equal to or inside an IP pool unless its origin is the cluster node
     that owns it: the block must be affine to that node (IPAM), or the host-length
     route must be a workload address of that node (a borrowed address); the origin is
     the peer itself when the peer is a cluster node, the ORIGINATOR_ID's node when a
     cluster node reflects it, or, through an external router (leaf-spine, RFC 7938),
     the node whose AS number is the AS_PATH's origin AS (route-origin validation
     against IPAM);
   - a per-peer maximum prefix count (``maxPrefixes``), enforced by the Rib.

Export: a BGPFilter's export rules decide per prefix (no match = send); what l3net
offers at all (its confirmed blocks and borrowed addresses inside pools) is decided by
``felix.calc``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache

from l3net.errors import FieldError
from l3net.model.bgpfilter_spec import BGPFilterSpec

_log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ACCEPT = "Accept"
REJECT = "Reject"
# The import reason of a path a BGPFilter rejects.
FILTERED = "rejected by BGPFilter"


@dataclass(frozen=True)
class FilterRule:
    """One BGPFilter rule: ``cidr``+``operator`` (None = any prefix), a prefix-length range, an action."""

    action: str
    cidr: IPNetwork | None = None
    operator: str | None = None
    min_len: int | None = None
    max_len: int | None = None
    source: str = ""          # the filter it comes from, for logs

    def matches(self, net: IPNetwork) -> bool:
        rule = self.cidr
        if rule is not None:
            if rule.version != net.version:
                return False
            inside = net.subnet_of(rule)  # type: ignore[arg-type]
            hit = {"Equal": net == rule, "NotEqual": net != rule, "In": inside, "NotIn": not inside}[
                self.operator or "In"]
            if not hit:
                return False
        if self.min_len is not None and net.prefixlen < self.min_len:
            return False
        return not (self.max_len is not None and net.prefixlen > self.max_len)


REJECT_ALL = FilterRule(action=REJECT, source="missing filter")


def rules_of(filters: Mapping[str, BGPFilterSpec | None], names: Iterable[str], direction: str, version: int,
             document: str = "") -> tuple[tuple[FilterRule, ...], list[FieldError]]:
    """The rules of the BGPFilters ``names`` (in order) for ``direction`` (import/export) and IP ``version``.

    ``filters`` maps a BGPFilter name to its typed spec, or to None for one the model refused. A missing
    or refused filter yields one reject-all rule and an error naming it.
    """
    out: list[FilterRule] = []
    errors: list[FieldError] = []
    for name in names:
        spec = filters.get(name)
        if spec is None:
            why = "does not exist" if name not in filters else "is invalid"
            until = "it does" if name not in filters else "it is fixed"
            errors.append(FieldError(path="spec.filters", reason=f"BGPFilter {name!r} {why}: rejecting every route "
                                     f"to and from this peer until {until}", document=document))
            out.append(REJECT_ALL)
            continue
        out.extend(FilterRule(action=rule.action, cidr=rule.cidr, operator=rule.match_operator,
                              min_len=rule.prefix_length.min, max_len=rule.prefix_length.max, source=name)
                   for rule in spec.rules(direction, version))
    return tuple(out), errors


def filter_verdict(rules: Iterable[FilterRule], net: IPNetwork) -> str | None:
    """``Accept``/``Reject`` from the first matching rule, or None when no rule matches."""
    for rule in rules:
        if rule.matches(net):
            return rule.action
    return None


@dataclass(frozen=True)
class ImportContext:
    """What the safe defaults need from the cluster: pools, who owns which block and address, node ASes.

    Built by :func:`build_import_context` from the agent's model; immutable and comparable, so the
    speaker re-checks what it holds only when this changes.
    """

    pools: tuple[str, ...] = ()
    # (block cidr, node) and (workload address as host prefix, node): sets, not sorted tuples, because they
    # hold every block and workload address of the cluster and change with each of them (see
    # build_import_context)
    block_owner: frozenset[tuple[str, str]] = frozenset()
    address_owner: frozenset[tuple[str, str]] = frozenset()
    node_addresses: tuple[tuple[str, str], ...] = ()     # (node address, node)
    node_as: tuple[tuple[str, int], ...] = ()            # (node, AS number)
    local_workloads: frozenset[str] = frozenset()        # this node's workload addresses (plain IPs)

    def index(self) -> _Index:
        return _Index(self)


def build_import_context(*, pools: Iterable[IPNetwork | str],
                         block_owner: Iterable[tuple[IPNetwork | str, str]] | AbstractSet[tuple[str, str]],
                         address_owner: Iterable[tuple[IPNetwork | str, str]],
                         node_addresses: Iterable[tuple[str, str]], node_as: Iterable[tuple[str, int]],
                         local_workloads: Iterable[str]) -> ImportContext:
    """Sorted, re-serialised tuples and sets (so equal clusters give equal contexts).

    ``address_owner`` and ``local_workloads`` are taken as the model wrote them: canonical text (``str()``
    of the ``ipaddress`` object its one parse made, ``felix.calc.Model.address_owners``), kept as sets
    (a copy when given a set). They hold every workload address of the cluster and every ADD anywhere
    changes them: re-parsing and sorting them on each was most of the agent's BGP work per ADD at 1,000
    pods. ``block_owner`` given as a set is taken the same way (``felix.calc.Model.block_owners``: every
    block claim anywhere changes it, and re-serialising it cost the size of the cluster's blocks per
    claim); any other iterable is re-serialised, as are the few pools and node addresses.
    """
    return ImportContext(
        pools=tuple(sorted({_net_text(p) for p in pools})),
        block_owner=frozenset(block_owner) if isinstance(block_owner, AbstractSet)
        else frozenset((_net_text(b), n) for b, n in block_owner),
        address_owner=frozenset(address_owner),
        node_addresses=tuple(sorted({(_address_text(a), n) for a, n in node_addresses})),
        node_as=tuple(sorted(set(node_as))),
        local_workloads=frozenset(local_workloads))


def paths_to_recheck(old: ImportContext, new: ImportContext) -> Callable[[str, str], bool] | None:
    """Which paths (by prefix and next hop) the change from ``old`` to ``new`` can re-decide; None: all of them.

    Every workload added anywhere in the cluster changes the context; re-checking every held path for
    each would make an ADD cost the size of the routing table on every node. The owner of a prefix is
    looked up by that prefix alone and a local workload by the next hop, so only those paths can flip.
    """
    if (old.pools, old.node_addresses, old.node_as) != (new.pools, new.node_addresses, new.node_as):
        return None
    owners = {p for p, _ in set(old.block_owner) ^ set(new.block_owner)}
    owners.update(p for p, _ in old.address_owner ^ new.address_owner)
    hops = old.local_workloads ^ new.local_workloads

    def affected(prefix: str, next_hop: str) -> bool:
        if next_hop in hops:
            return True
        try:
            return _net_text(prefix) in owners
        except ValueError:
            return True   # refused as "not a prefix" either way; let the full check say so
    return affected


# The context is rebuilt on every change of the cluster's workloads, with the same pools, blocks and
# node addresses nearly every time, and each learned path's prefix is looked up again on each rebuild.
@lru_cache(maxsize=1 << 16)
def _net_text(net: IPNetwork | str) -> str:
    return str(ipaddress.ip_network(net))


@lru_cache(maxsize=1 << 16)
def _address_text(address: str) -> str:
    return str(ipaddress.ip_address(address))


class _Index:
    """Lookups over one :class:`ImportContext` (built once per context)."""

    def __init__(self, ctx: ImportContext) -> None:
        self.ctx = ctx
        self.pools = [ipaddress.ip_network(p) for p in ctx.pools]
        self.block_owner = _owners(ctx.block_owner)
        self.address_owner = _owners(ctx.address_owner)
        self.node_of_address = dict(ctx.node_addresses)
        self.as_of_node = dict(ctx.node_as)

    def in_pool(self, net: IPNetwork) -> bool:
        return any(p.version == net.version and net.subnet_of(p) for p in self.pools)  # type: ignore[arg-type]

    def owner(self, prefix: str) -> str | None:
        return self.block_owner.get(prefix) or self.address_owner.get(prefix)


def _owners(pairs: frozenset[tuple[str, str]]) -> dict[str, str]:
    """prefix -> node. A prefix claimed by two nodes (IPAM never hands out an address or a block twice; a
    hand-written endpoint or affinity can) gets the same owner every time: the last node in sorted order."""
    owners = dict(pairs)
    return owners if len(owners) == len(pairs) else dict(sorted(pairs))


@dataclass(frozen=True)
class PeerFacts:
    """What the import check needs to know about the peer a path came from."""

    address: str
    node: str | None            # the cluster node this peer is, if it is one
    import_rules: tuple[FilterRule, ...] = ()


def import_reason(index: _Index, peer: PeerFacts, prefix: str, next_hop: str, as_path: tuple[int, ...],
                  originator_id: str | None) -> str | None:
    """Why the path must not be taken (None: take it). See the module docstring for the order."""
    try:
        net = ipaddress.ip_network(prefix)
    except ValueError:
        return "not a prefix"
    if next_hop in index.ctx.local_workloads:
        return "next hop is a local workload"
    verdict = filter_verdict(peer.import_rules, net)
    if verdict == REJECT:
        return FILTERED
    if index.in_pool(net):
        owner = index.owner(str(net))
        if owner is None:
            return "inside an IP pool and not a block or address any node owns"
        if not _from_owner(index, peer, owner, as_path, originator_id):
            return f"inside an IP pool and owned by node {owner}, but the route does not originate there"
    return None


def _from_owner(index: _Index, peer: PeerFacts, owner: str, as_path: tuple[int, ...],
                originator_id: str | None) -> bool:
    """Does the path originate at ``owner``, as far as BGP can tell?

    - a reflected path (ORIGINATOR_ID set, from an iBGP peer: a cluster reflector or an external
      one in our own AS) originates at the node with that router ID;
    - a path straight from a cluster node over iBGP originates at that node;
    - a path with an AS_PATH (eBGP, through an external router or from a node in another AS)
      originates in the path's last AS, which must be the owner's AS.
    """
    if as_path:
        return index.as_of_node.get(owner) == as_path[-1]
    if originator_id:
        return index.node_of_address.get(originator_id) == owner
    return peer.node == owner
