"""felix.wiring: what the node's own workloads ask of the dataplane, kept up to date one workload at a time.

Each local workload asks for a ``/32`` (``/128``) route per address over its interface and proxy ARP on it
once the interface exists and is up (until then it waits), and an advertisement per address it borrowed
(inside an IP pool but outside this node's blocks, unless its pool has ``disableBGPExport``). A workload
with an address outside every IP pool is refused whole. :class:`LocalWiring` keeps each workload's share
and the node's totals, and on each calculation re-wires only the workloads that changed in the model,
whose interface changed, or that lie in a block that came or went (everything when the pools change). A
pod ADD or DEL on a node of 500 pods, or a block claim, so costs a few workloads' work plus a comparison by
identity of the node's workloads and links (~50 µs), where a pass over every workload cost ~2 ms of the
agent's GIL on the ADD's path.

Two local workloads that claim one address: the one first in key order that has a route keeps it (a
warning names both), as a calculation from cold would decide.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from felix.desired import Advertisement, InterfaceSpec, RouteSpec
from felix.links import Link

if TYPE_CHECKING:
    from l3net.model.resource import Resource

_log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A changed block with more addresses than this is not walked address by address: every workload is checked.
MAX_WALKED_BLOCK = 4096


class Workload(Protocol):
    """What the wiring reads of a workload (felix.calc.Workload)."""

    @property
    def ifname(self) -> str: ...
    @property
    def networks(self) -> tuple[IPNetwork, ...]: ...
    @property
    def network_texts(self) -> tuple[str, ...]: ...
    @property
    def dsts(self) -> tuple[str, ...]: ...
    @property
    def resource(self) -> Resource: ...


class NetIndex(Protocol):
    """``net in index``: is the network inside one of the index's networks (felix.calc.CoverIndex)."""

    nets: frozenset[IPNetwork]

    def __contains__(self, net: IPNetwork) -> bool: ...


class PoolsIndex(NetIndex, Protocol):
    def outside(self, w: Workload) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class WorkloadWiring:
    """One workload's share: its interface (None: missing or down, so it waits) and, per network, its text,
    its route (None while the interface waits) and its borrowed-address advertisement."""

    interface: InterfaceSpec | None
    nets: tuple[tuple[str, RouteSpec | None, Advertisement | None], ...]


def wire_one(w: Workload, ifindex: int | None, blocks: NetIndex, no_export: NetIndex,
             in_pools: NetIndex) -> WorkloadWiring:
    nets = []
    for net, dst in zip(w.networks, w.network_texts, strict=True):
        route = None if ifindex is None else RouteSpec(dst=dst, kind="workload", ifname=w.ifname, ifindex=ifindex)
        borrowed = net not in blocks and net not in no_export and net in in_pools
        nets.append((dst, route, Advertisement(prefix=dst, reason="borrowed") if borrowed else None))
    return WorkloadWiring(InterfaceSpec(w.ifname) if ifindex is not None else None, tuple(nets))


def _count(counts: dict[object, int], item: object, step: int) -> None:
    n = counts.get(item, 0) + step
    if n > 0:
        counts[item] = n
    else:
        counts.pop(item, None)


class LocalWiring:
    """The node's local workloads' wiring and its totals, updated incrementally (see the module docstring).

    The totals are plain dicts used as counted sets: a frozenset built from a dict reuses the hashes the dict
    stored, where hashing each route and interface again (dataclasses: Python-level hashes) cost ~1 ms per
    calculation at 500 pods. Not thread-safe: the calculation runs on the agent's loop thread.
    """

    def __init__(self, wire: Callable[..., WorkloadWiring] = wire_one) -> None:
        self._wire = wire
        self._workloads: dict[str, Workload] = {}   # as of the last update, to find what changed by identity
        self._links: dict[str, Link] = {}
        self._indexes: tuple[object, ...] = ()     # (no_export, in_pools, pools): any change re-wires everything
        self._block_nets: frozenset[IPNetwork] = frozenset()
        self._share: dict[str, tuple[Workload, WorkloadWiring | None]] = {}  # None: refused (outside the pools)
        self._by_ifname: dict[str, set[str]] = {}
        self._by_address: dict[tuple[int, int], set[str]] = {}
        self._claims: dict[str, dict[str, tuple[RouteSpec | None, Advertisement | None]]] = {}
        self._route_of: dict[str, RouteSpec] = {}
        self._advert_of: dict[str, Advertisement] = {}
        self.routes: dict[RouteSpec, None] = {}
        self.adverts: dict[Advertisement, None] = {}
        self.interfaces: dict[InterfaceSpec, int] = {}
        self.waiting: dict[str, int] = {}
        self.dsts: dict[str, int] = {}
        self.own_ips: dict[str, int] = {}
        self.serving: dict[str, Resource] = {}
        self.refused: dict[str, None] = {}
        # Refused workload key -> the addresses last warned about, so a refusal is logged once per change.
        self._reported: dict[str, tuple[str, ...]] = {}
        # The destinations whose claims the last update changed (felix.blocks re-decides a block's blackhole
        # when a workload's route has the block's prefix).
        self.touched: set[str] = set()

    @property
    def accepted(self) -> int:
        return len(self._share) - len(self.refused)

    def update(self, workloads: Mapping[str, Workload], links: Mapping[str, Link], blocks: NetIndex,
               no_export: NetIndex, in_pools: NetIndex, pools: PoolsIndex) -> None:
        """Bring the totals to ``workloads`` (this node's, by key) under these links, blocks and pools."""
        indexes = (no_export, in_pools, pools)
        if indexes != self._indexes:
            dirty = set(self._workloads) | set(workloads)
        else:
            dirty = {k for k, w in workloads.items() if self._workloads.get(k) is not w}
            dirty.update(self._workloads.keys() - workloads.keys())
            for name in {n for n, link in links.items() if self._links.get(n) is not link} | \
                    (self._links.keys() - links.keys()):
                dirty.update(self._by_ifname.get(name, ()))
            dirty.update(self._inside(self._block_nets ^ blocks.nets))
        self._workloads, self._links, self._indexes, self._block_nets = dict(workloads), dict(links), indexes, \
            blocks.nets
        touched: set[str] = set()
        for key in sorted(dirty):
            self._drop(key, touched)
            w = workloads.get(key)
            if w is not None:
                self._add(key, w, links, blocks, no_export, in_pools, pools, touched)
        for dst in touched:
            self._resolve(dst)
        self.touched = touched

    def _inside(self, changed: Iterable[IPNetwork]) -> set[str]:
        """The keys of workloads with an address inside one of the ``changed`` blocks."""
        keys: set[str] = set()
        for block in changed:
            if block.num_addresses > MAX_WALKED_BLOCK:
                keys.update(k for k, (w, _) in self._share.items() if _any_inside(w.networks, block))
                continue
            first = int(block.network_address)
            for a in range(first, first + block.num_addresses):
                keys.update(self._by_address.get((block.version, a), ()))
        return keys

    def _add(self, key: str, w: Workload, links: Mapping[str, Link], blocks: NetIndex, no_export: NetIndex,
             in_pools: NetIndex, pools: PoolsIndex, touched: set[str]) -> None:
        self._by_ifname.setdefault(w.ifname, set()).add(key)
        for net in w.networks:
            self._by_address.setdefault((net.version, int(net.network_address)), set()).add(key)
        stray = pools.outside(w)
        if stray:
            # Routing, proxy-ARPing or advertising an address outside every pool would let a
            # WorkloadEndpoint written straight into etcd capture node or external traffic.
            if self._reported.get(key) != w.dsts:
                _log.warning("workload skipped: addresses outside every IPPool wep=%s addresses=%s", key,
                             ",".join(stray))
                self._reported[key] = w.dsts
            self._share[key] = (w, None)
            self.refused[key] = None
            return
        self._reported.pop(key, None)
        link = links.get(w.ifname)
        wiring = self._wire(w, link.index if link is not None and link.up else None, blocks, no_export, in_pools)
        self._share[key] = (w, wiring)
        self._apply(key, w, wiring, 1, touched)

    def _drop(self, key: str, touched: set[str]) -> None:
        kept = self._share.pop(key, None)
        if kept is None:
            self._reported.pop(key, None)
            return
        w, wiring = kept
        unindex(self._by_ifname, w.ifname, key)
        for net in w.networks:
            unindex(self._by_address, (net.version, int(net.network_address)), key)
        if wiring is None:
            self.refused.pop(key, None)
        else:
            self._apply(key, w, wiring, -1, touched)

    def _apply(self, key: str, w: Workload, wiring: WorkloadWiring, step: int, touched: set[str]) -> None:
        if wiring.interface is not None:
            _count(self.interfaces, wiring.interface, step)   # type: ignore[arg-type]
            if step > 0:
                self.serving[key] = w.resource
            else:
                self.serving.pop(key, None)
        else:
            _count(self.waiting, w.ifname, step)   # type: ignore[arg-type]
        for dst, route, advert in wiring.nets:
            _count(self.dsts, dst, step)   # type: ignore[arg-type]
            _count(self.own_ips, dst.partition("/")[0], step)   # type: ignore[arg-type]
            if step > 0:
                self._claims.setdefault(dst, {})[key] = (route, advert)
            else:
                unindex(self._claims, dst, key)
            touched.add(dst)

    def _resolve(self, dst: str) -> None:
        """The route and advertisement of ``dst`` from its claimants, in key order (as from cold)."""
        old = self._route_of.pop(dst, None)
        if old is not None:
            del self.routes[old]
        advert = self._advert_of.pop(dst, None)
        if advert is not None:
            del self.adverts[advert]
        route: RouteSpec | None = None
        advert = None
        claims = self._claims.get(dst, {})
        for key in sorted(claims):
            claimed, borrowed = claims[key]
            if route is not None:
                _log.warning("two local workloads claim one address dst=%s kept=%s ignored=%s", dst, route.ifname,
                             self._share[key][0].ifname)
                continue
            route = claimed
            advert = advert or borrowed
        if route is not None:
            self._route_of[dst] = route
            self.routes[route] = None
        if advert is not None:
            self._advert_of[dst] = advert
            self.adverts[advert] = None

    def has_route(self, dst: str) -> bool:
        return dst in self._route_of


def unindex(index: dict[Any, Any], item: object, key: str) -> None:
    """Take ``key`` out of ``index[item]`` (a set, or a dict by key), and drop the entry once it is empty."""
    members = index.get(item)
    if members is not None:
        if isinstance(members, set):
            members.discard(key)
        else:
            members.pop(key, None)
        if not members:
            del index[item]


def _any_inside(nets: Iterable[IPNetwork], block: IPNetwork) -> bool:
    return any(n.version == block.version and n.subnet_of(block) for n in nets)  # type: ignore[arg-type]
