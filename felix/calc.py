"""felix.calc: the in-memory model of the datastore and the pure calculation of the desired state.

:class:`Model` holds every decoded value by key. A value that does not decode
or validate is logged with its key and treated exactly like a deletion, so one
bad record never crashes the agent or disturbs anything else (Felix's
ValidationFilter). :func:`compute` turns the model plus the node's links and
the routes learned over BGP into one immutable :class:`DesiredState`.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from felix.blocks import LocalBlocks
from felix.config import config_prefix
from felix.desired import Advertisement, DesiredState, InterfaceSpec, NatOutgoing, RouteSpec
from felix.learned import LearnedRoutes
from felix.links import Link
from felix.netindex import CoverIndex
from felix.services import ServiceCIDRs, service_cidrs, service_prefixes
from felix.wiring import LocalWiring
from l3net import metrics
from l3net.keys import KeyLayout
from l3net.model.bgp_specs import BGPConfigurationSpec, checked
from l3net.model.decode import Invalid, decode
from l3net.model.ippool_spec import ippool_spec
from l3net.model.resource import KINDS_BY_PLURAL, Resource
from l3net.model.workload_spec import workload_spec

if TYPE_CHECKING:  # annotations only, as in felix.desired
    from bgp.view import NodeBGPView
    from policy.compiler import PolicyProgram

_log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


_T = TypeVar("_T")


class KeyUpdateLike(Protocol):
    """What the syncer hands over (``l3net.syncer.KeyUpdate``): value None means deleted."""

    key: str
    value: bytes | None
    revision: int


@dataclass(frozen=True)
class Workload:
    """The parts of a WorkloadEndpoint the dataplane needs."""

    key: str
    node: str
    ifname: str
    networks: tuple[IPNetwork, ...]
    resource: Resource
    # str() of each network, computed once at decode time (the calculation runs on every change).
    dsts: tuple[str, ...] = ()

    @functools.cached_property
    def network_texts(self) -> tuple[str, ...]:
        """str() of each network: ``dsts`` when decoded from the datastore, else computed once here."""
        return self.dsts or tuple(str(n) for n in self.networks)

    @functools.cached_property
    def host_prefixes(self) -> tuple[str, ...]:
        """The workload's single-address networks (/32, /128) as text (the BGP view reads every
        workload's on every apply)."""
        return tuple(t for n, t in zip(self.networks, self.network_texts, strict=True)
                     if n.prefixlen == n.max_prefixlen)


@dataclass(frozen=True)
class Pool:
    key: str
    cidr: IPNetwork
    disable_bgp_export: bool
    disabled: bool
    nat_outgoing: bool = False

    @functools.cached_property
    def cidr_text(self) -> str:
        """str(cidr), once: the calculation and the BGP view read every pool on every apply."""
        return str(self.cidr)


@dataclass(frozen=True)
class Affinity:
    node: str
    cidr: IPNetwork
    state: str

    @functools.cached_property
    def cidr_text(self) -> str:
        """str(cidr), once: the BGP view reads every block of the cluster on every apply."""
        return str(self.cidr)


def _workload(key: str, res: Resource) -> Workload:
    # The model's typed spec: its interface name and networks passed the model's one check (a wrong one would
    # get routes and proxy ARP on a node interface: issue 13, finding 3); ValueError for one it refuses.
    spec = workload_spec(res)
    if spec.interface_name is None:
        raise ValueError("spec.interfaceName: absent, so there is no interface to route to")
    return Workload(key=key, node=spec.node, ifname=spec.interface_name, networks=spec.ip_networks, resource=res,
                    dsts=tuple(str(n) for n in spec.ip_networks))


def _pool(key: str, res: Resource) -> Pool:
    spec = ippool_spec(res)   # the model's parse; ValueError (ValidationError) for one it refuses
    return Pool(key=key, cidr=spec.cidr, disable_bgp_export=spec.disable_bgp_export, disabled=spec.disabled,
                nat_outgoing=spec.nat_outgoing)


class Model:
    """Every value of the datastore this agent cares about, decoded, by key.

    Mutated only by :meth:`apply` on the agent's loop; not thread-safe. Idempotent:
    applying the same update twice leaves the same model. Workloads and affinities are
    also indexed by node, so the calculation for one node never walks the cluster's.
    """

    def __init__(self, keys: KeyLayout) -> None:
        self.keys = keys
        self.resources: dict[str, Resource] = {}
        self.workloads: dict[str, Workload] = {}
        self.pools: dict[str, Pool] = {}
        self.affinities: dict[str, Affinity] = {}
        self.services: dict[str, Resource] = {}
        self._resources_by_kind: dict[str, dict[str, Resource]] = {}
        self._workloads_by_node: dict[str, dict[str, Workload]] = {}
        self._affinities_by_node: dict[str, dict[str, Affinity]] = {}
        # (host prefix, node) of every workload's /32 and /128, counted (two endpoints may hold one address),
        # and each node's workload addresses: kept as workloads come and go, because the BGP import defaults
        # read them on every change of any workload, and a walk of the cluster's costs its size per ADD
        self._address_owners: Counter[tuple[str, str]] = Counter()
        # (block, node) of every confirmed affinity, kept the same way for the same readers
        self._block_owners: Counter[tuple[str, str]] = Counter()
        self._addresses_by_node: dict[str, Counter[str]] = {}
        self.invalid: dict[str, str] = {}
        # Raw values of the datastore's config/ keys (felix.config parses them; bad ones are its to log).
        self.config: dict[str, bytes] = {}
        self.config_prefix = config_prefix(keys)
        self.revision = 0
        # Counts every update applied: a result derived from the model may be kept while this stays the same
        # (``revision`` may not move: a test or a replay can apply many updates at one revision).
        self.generation = 0
        self._derived: dict[str, tuple[int, Any]] = {}
        # The generation of the last update that touched a node's workloads or block affinities, and of the
        # last that touched anything else: what one node derives from its own pods need not be redone when
        # another node's pod comes or goes (see local_generation).
        self._node_generation: dict[str, int] = {}
        self._shared_generation = 0

    def apply(self, updates: Iterable[KeyUpdateLike]) -> int:
        """Apply a batch of key updates; returns how many were applied.

        Total: no value can make it raise. A key whose value does not decode or validate (for any
        reason, a RecursionError included) is treated as deleted and listed in :attr:`invalid`.
        """
        n = 0
        for up in updates:
            n += 1
            self.generation += 1
            self.revision = max(self.revision, up.revision)
            self._forget(up.key)
            if up.value is None:
                continue
            try:
                self._store(up.key, up.value)
            except Exception as exc:  # total by contract: any failure is this key's, never the batch's
                # ValidationError, bad JSON, non-UTF-8 bytes, RecursionError from deep nesting, or a decoder bug:
                # the key is absent (its earlier value is gone too), logged and counted; the batch goes on.
                self._forget(up.key)
                self.invalid[up.key] = f"{type(exc).__name__}: {exc}"[:500]
                metrics.DECODE_FAILURES.labels(where="model").inc()
                _log.warning("invalid datastore value, treating as absent key=%s error=%s", up.key,
                             self.invalid[up.key])
        return n

    def tracks(self, key: str) -> bool:
        """Whether ``key`` can change what the model holds (configuration, resources of a known kind, block
        affinities). IPAM blocks and handles, node status and leases cannot: an update to them changes no
        desired state, so it need not make the loop apply (each agent's status write would otherwise make
        every agent apply, spending the loop's apply credits on nothing)."""
        if key.startswith(self.config_prefix):
            return True
        parsed = self.keys.parse_resource(key)
        if parsed is not None:
            return parsed[0] in KINDS_BY_PLURAL
        return self.keys.parse_affinity(key) is not None

    def _forget(self, key: str) -> None:
        res = self.resources.get(key)
        if res is not None:
            _drop_indexed(self._resources_by_kind, res.kind, key)
        w = self.workloads.get(key)
        if w is not None:
            _drop_indexed(self._workloads_by_node, w.node, key)
            self._count_addresses(w, -1)
            self._node_generation[w.node] = self.generation
        a = self.affinities.get(key)
        if a is not None:
            _drop_indexed(self._affinities_by_node, a.node, key)
            if a.state == "confirmed":
                _uncount(self._block_owners, (a.cidr_text, a.node))
            self._node_generation[a.node] = self.generation
        if w is None and a is None and (res is not None or key in self.config or key in self.invalid):
            self._shared_generation = self.generation
        for d in (self.resources, self.workloads, self.pools, self.affinities, self.services, self.invalid,
                  self.config):
            d.pop(key, None)

    def _store(self, key: str, raw: bytes) -> None:
        if key.startswith(self.config_prefix):
            self.config[key] = raw
            self._shared_generation = self.generation
            return
        parsed = self.keys.parse_resource(key)
        if parsed is not None:
            plural = parsed[0]
            if plural not in KINDS_BY_PLURAL:
                return
            res = decode(self.keys, key, raw)   # the one decode path (l3netctl's too); revision 0 as before
            if isinstance(res, Invalid):
                raise res.exception()
            if res.kind != "WorkloadEndpoint":
                self._shared_generation = self.generation
            if res.kind == "WorkloadEndpoint":
                w = _workload(key, res)
                self.workloads[key] = w
                self._workloads_by_node.setdefault(w.node, {})[key] = w
                self._count_addresses(w, 1)
                self._node_generation[w.node] = self.generation
            elif res.kind == "IPPool":
                self.pools[key] = _pool(key, res)
            elif res.kind == "Service":
                self.services[key] = res
            self.resources[key] = res
            self._resources_by_kind.setdefault(res.kind, {})[key] = res
            return
        aff = self.keys.parse_affinity(key)
        if aff is not None:
            value = json.loads(raw)
            if not isinstance(value, dict) or not isinstance(value.get("state"), str):
                raise ValueError("state: required string")
            a = Affinity(node=aff[0], cidr=ipaddress.ip_network(aff[1]), state=value["state"])
            self.affinities[key] = a
            self._affinities_by_node.setdefault(a.node, {})[key] = a
            if a.state == "confirmed":
                self._block_owners[(a.cidr_text, a.node)] += 1
            self._node_generation[a.node] = self.generation
        # Blocks, handles and the rest of IPAM are not needed by the dataplane.

    def _count_addresses(self, w: Workload, step: int) -> None:
        local = self._addresses_by_node.setdefault(w.node, Counter())
        for dst in w.host_prefixes:
            pair, address = (dst, w.node), dst.partition("/")[0]
            self._address_owners[pair] += step
            local[address] += step
            # a Counter keeps zero counts: drop them, so the sets below hold only what some workload has
            if self._address_owners[pair] <= 0:
                del self._address_owners[pair]
            if local[address] <= 0:
                del local[address]
        if not local:
            del self._addresses_by_node[w.node]

    def local_generation(self, node: str) -> int:
        """A number that moves whenever ``node``'s workloads or block affinities change, or anything that is
        not another node's workload or affinity (pools, services, configuration, any other resource); equal
        numbers, equal inputs for what is derived from the node's own pods."""
        return max(self._node_generation.get(node, 0), self._shared_generation)

    def address_owners(self) -> frozenset[tuple[str, str]]:
        """(host prefix, node) of every workload's /32 and /128 in the cluster, as canonical text; kept while
        the model is unchanged."""
        return self.derived("address-owners", lambda: frozenset(self._address_owners))

    def block_owners(self) -> frozenset[tuple[str, str]]:
        """(block, node) of every confirmed block affinity in the cluster, as canonical text; kept while the
        model is unchanged."""
        return self.derived("block-owners", lambda: frozenset(self._block_owners))

    def workload_addresses(self, node: str) -> frozenset[str]:
        """The plain addresses of ``node``'s workloads' /32s and /128s, as canonical text."""
        return frozenset(self._addresses_by_node.get(node, ()))

    def derived(self, name: str, compute: Callable[[], _T]) -> _T:
        """``compute()``, kept under ``name`` until the model next changes: for what the agent derives from the
        whole cluster on every apply, when an apply (a learned route, a link) comes with no model change."""
        kept = self._derived.get(name)
        if kept is not None and kept[0] == self.generation:
            return kept[1]   # type: ignore[no-any-return]
        value = compute()
        self._derived[name] = (self.generation, value)
        return value

    def workloads_by_key(self, node: str) -> Mapping[str, Workload]:
        """The workloads of ``node`` by key: the model's own index, read-only (it changes as the model does)."""
        return self._workloads_by_node.get(node, {})

    def workloads_on(self, node: str) -> list[Workload]:
        """The workloads of ``node`` (from the by-node index: cost follows that node's pods only)."""
        return list(self._workloads_by_node.get(node, {}).values())

    def affinities_of(self, node: str) -> list[Affinity]:
        return list(self._affinities_by_node.get(node, {}).values())

    def affinities_by_key(self, node: str) -> Mapping[str, Affinity]:
        """The block affinities of ``node`` by key: the model's own index, read-only (it changes as the model
        does)."""
        return self._affinities_by_node.get(node, {})

    def bgp_configuration(self) -> Resource | None:
        """The ``default`` BGPConfiguration (the cluster-wide one), if any."""
        return self.resources.get(self.keys.resource("bgpconfigurations", "default"))

    def resources_of(self, kind: str) -> list[Resource]:
        """The resources of one kind (from the by-kind index: the BGP view reads four small kinds on every
        apply, which must not walk the cluster's workloads)."""
        return list(self._resources_by_kind.get(kind, {}).values())


def _uncount(counts: Counter[tuple[str, str]], item: tuple[str, str]) -> None:
    counts[item] -= 1
    if counts[item] <= 0:   # a Counter keeps zero counts: drop them, so the set holds only what is claimed
        del counts[item]


def _drop_indexed(index: dict[str, dict[str, Any]], node: str, key: str) -> None:
    bucket = index.get(node)
    if bucket is not None:
        bucket.pop(key, None)
        if not bucket:
            del index[node]


# What the calculation is given to build the policy and BGP slices of the desired state (the agent passes
# its long-lived compiler and secrets through these; tests pass their own or none).
BuildPolicy = Callable[["Model", str], "PolicyProgram"]
BuildBGPView = Callable[["Model", str], "NodeBGPView"]


@functools.lru_cache(maxsize=16)
def cover_index(nets: frozenset[IPNetwork]) -> CoverIndex:
    """One index per set of networks, kept while the set lasts: the same object for the same set, so a
    result that depends on an index can be remembered by the index's identity."""
    return CoverIndex(nets)


class PoolIndex(CoverIndex):
    """The IPPools' CIDRs, remembering each workload's answer: the policy builder asks it for every workload
    of the cluster on each build (the route side only for workloads that changed), and the pools rarely
    change."""

    MEMO_MAX = 1 << 17

    def __init__(self, nets: Iterable[IPNetwork]) -> None:
        super().__init__(nets)
        self._outside: dict[tuple[str, ...], tuple[str, ...]] = {}

    def outside(self, w: Workload) -> tuple[str, ...]:
        found = self._outside.get(w.network_texts)
        if found is None:
            found = tuple(dst for net, dst in zip(w.networks, w.network_texts, strict=True) if net not in self)
            if len(self._outside) >= self.MEMO_MAX:  # deleted workloads' answers stay: churn must not grow it
                self._outside.clear()
            self._outside[w.network_texts] = found
        return found


@functools.lru_cache(maxsize=4)
def _pool_index_of(cidrs: frozenset[IPNetwork]) -> PoolIndex:
    return PoolIndex(cidrs)


def pool_index(model: Model) -> PoolIndex:
    """Every IPPool's CIDR, for :func:`outside_pools`: one index per set of pools, kept while it lasts."""
    return _pool_index_of(frozenset(p.cidr for p in model.pools.values()))


def outside_pools(w: Workload, pools: PoolIndex) -> tuple[str, ...]:
    """The addresses of ``w`` that no IPPool covers (a workload with any of them is rejected)."""
    return pools.outside(w)


def _net_key(n: IPNetwork) -> tuple[int, int, int]:
    return n.version, int(n.network_address), n.prefixlen


def nat_outgoing(pools: Iterable[Pool]) -> NatOutgoing:
    """Calico's natOutgoing for this node: IPv4 pools only (IPv6 natOutgoing is refused by validation)."""
    v4 = sorted({p.cidr for p in pools if p.cidr.version == 4}, key=_net_key)
    masq = sorted({p.cidr for p in pools if p.cidr.version == 4 and p.nat_outgoing}, key=_net_key)
    if not masq:
        return NatOutgoing()
    return NatOutgoing(masq_pools=tuple(str(n) for n in masq), all_pools=tuple(str(n) for n in v4))


def compute(model: Model, node: str, links: Mapping[str, Link], learned: Mapping[str, Sequence[str]], *,
            node_ips: Iterable[str] = (), policy_builder: BuildPolicy | None = None,
            bgp_builder: BuildBGPView | None = None) -> DesiredState:
    """The dataplane this node should have. Pure: same inputs, same (equal) output.

    - a ``/32`` (``/128``) scope-link route per address of each local workload whose
      interface exists and is up (until then the workload is listed as waiting);
    - a blackhole per **confirmed** block affine to this node;
    - each learned prefix via its next hops (ECMP when several), except prefixes equal to
      our own blocks or to our own workload addresses (we own those locally); a learned
      /32 inside our block is kept: another node borrowed that address;
    - a local workload with an address outside every IPPool (disabled pools count: disabling
      a pool stops new allocations, as in Calico, not running pods) is skipped whole, logged
      and listed in ``rejected_workloads``;
    - ``nat``: the pools whose pods are masqueraded towards destinations outside every pool
      (:func:`nat_outgoing`; the same on every node, as in Calico);
    - BGP advertisements: our confirmed blocks, and a /32 per local address outside them
      (borrowed) but inside an IP pool, skipping pools with ``disableBGPExport``; a learned
      route never goes via a local workload's address (the BGP import defaults refuse such
      paths too: this is the last line);
    - Service advertisements (:mod:`felix.services`): the default BGPConfiguration's service
      CIDRs, and the /32s of ``externalTrafficPolicy: Local`` Services with an endpoint here
      whose interface is up. No kernel route for them (kube-proxy's job): neither a blackhole
      nor a learned route inside a service CIDR.
    """
    return Calculation(node, policy_builder=policy_builder, bgp_builder=bgp_builder).desired(
        model, links, learned, node_ips=node_ips)


@dataclass(frozen=True)
class _LocalPart:
    """What :func:`compute` derives from the model and the links alone: everything but the learned routes."""

    routes: frozenset[RouteSpec]          # the local workloads' routes and the blocks' blackholes
    interfaces: frozenset[InterfaceSpec]
    adverts: frozenset[Advertisement]
    taken: frozenset[str]                 # destinations a learned route may not take
    own_ips: frozenset[str]               # the local workloads' addresses (a learned route never goes via one)
    svc_cidrs: ServiceCIDRs
    local_endpoints: int
    local_blocks: int
    rejected: tuple[str, ...]
    waiting: tuple[str, ...]


class Calculation:
    """One node's calculation of :func:`compute`, keeping what it derived between runs (the agent has one).

    :func:`compute` is a calculation from cold; this object gives the equal result, and spends on each run
    only what changed: the node's wiring is kept one workload at a time (:class:`felix.wiring.LocalWiring`),
    its blocks one block at a time (:class:`felix.blocks.LocalBlocks`) and the learned routes one prefix at a
    time (:class:`felix.learned.LearnedRoutes`): a pass over every block or learned prefix on each calculation
    cost ~20 and ~10 µs per item, 6 and 3 ms at 250 of them, on the path of every ADD and of every route
    learned. The local part (everything but the learned routes, the policy program and the BGP view) is kept
    while the node's local generation and links are unchanged. A route learned or withdrawn over BGP changes
    neither, nor does another node's pod: redoing the part cost a pass over the node's workloads (~2 ms at 500
    pods) before the learned route reached the kernel. The policy program and the BGP view come from the
    builders it is given (the agent's own: its PolicyBuilder owns the agent's one PolicyCompiler). Not
    thread-safe: the agent's loop thread.
    """

    def __init__(self, node: str, *, policy_builder: BuildPolicy | None = None,
                 bgp_builder: BuildBGPView | None = None) -> None:
        self.node = node
        self.policy_builder = policy_builder
        self.bgp_builder = bgp_builder
        self._wiring = LocalWiring()
        self._blocks = LocalBlocks()
        self._learned = LearnedRoutes()
        # The last local part, with the model (by identity), its local generation and the links it came from.
        self._last: tuple[Model, int, dict[str, Link], _LocalPart] | None = None

    def desired(self, model: Model, links: Mapping[str, Link], learned: Mapping[str, Sequence[str]], *,
                node_ips: Iterable[str] = (), policy: bool = True, bgp: bool = True) -> DesiredState:
        """The desired state (see :func:`compute`); ``policy``/``bgp`` False leave out the policy program / the
        BGP view (a side that does not use them)."""
        part = self._local_part(model, links)
        self._learned.update(learned, part.taken, part.own_ips.union(node_ips), part.svc_cidrs)
        program = self.policy_builder(model, self.node) if policy and self.policy_builder else None
        bgp_view = self.bgp_builder(model, self.node) if bgp and self.bgp_builder else None
        return DesiredState(routes=part.routes.union(self._learned.routes), interfaces=part.interfaces,
                            advertisements=part.adverts, policy=program, bgp_view=bgp_view,
                            nat=nat_outgoing(model.pools.values()),
                            local_endpoints=part.local_endpoints, local_blocks=part.local_blocks,
                            rejected_workloads=part.rejected, waiting_for_interfaces=part.waiting)

    def policy_side(self, model: Model) -> DesiredState:
        """:func:`compute_policy` with this calculation's policy builder."""
        return compute_policy(model, self.node, self.policy_builder)

    def _local_part(self, model: Model, links: Mapping[str, Link]) -> _LocalPart:
        generation = model.local_generation(self.node)
        if self._last is not None:
            kept_model, kept_generation, kept_links, part = self._last
            # links by value (the loop replaces its links only when they change, so this compares the same Link
            # objects, which dict equality checks by identity first)
            if kept_model is model and kept_generation == generation and kept_links == links:
                return part
        part = self._compute_local_part(model, links)
        self._last = (model, generation, dict(links), part)
        return part

    def _compute_local_part(self, model: Model, links: Mapping[str, Link]) -> _LocalPart:
        no_export = cover_index(frozenset(p.cidr for p in model.pools.values() if p.disable_bgp_export))
        blocks, wiring, pools = self._blocks, self._wiring, pool_index(model)
        blocks.update(model.affinities_by_key(self.node))
        # the pool index answers "inside a pool?" too: one index of the pools serves both questions
        wiring.update(model.workloads_by_key(self.node), links, blocks.index, no_export, pools, pools)
        blocks.settle(no_export, wiring.has_route, wiring.touched)

        config = model.bgp_configuration()
        svc_cidrs = service_cidrs(checked(config, BGPConfigurationSpec).spec if config is not None else None)
        services = [Advertisement(prefix=p, reason="service")
                    for p in service_prefixes(svc_cidrs, model.services.values(), wiring.serving.values())]
        return _LocalPart(routes=frozenset(wiring.routes).union(blocks.routes),
                          interfaces=frozenset(wiring.interfaces),
                          adverts=frozenset(wiring.adverts).union(blocks.adverts, services),
                          taken=frozenset(wiring.dsts).union(blocks.dsts), own_ips=frozenset(wiring.own_ips),
                          svc_cidrs=svc_cidrs, local_endpoints=wiring.accepted, local_blocks=len(blocks),
                          rejected=tuple(sorted(wiring.refused)), waiting=tuple(sorted(wiring.waiting)))


def compute_policy(model: Model, node: str, policy_builder: BuildPolicy | None) -> DesiredState:
    """The policy side's slice of :func:`compute`: the policy program and NAT outgoing, nothing else.

    The routes, interfaces and advertisements cost a pass over the node's workloads on every apply
    (~1.5 ms at 500 pods, on the thread that also serves the route side), and the policy side uses none
    of them.
    """
    return DesiredState(policy=policy_builder(model, node) if policy_builder else None,
                        nat=nat_outgoing(model.pools.values()))
