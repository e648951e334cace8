"""felix.learned: the kernel routes for the prefixes learned over BGP, kept one prefix at a time.

A learned prefix gets a route via its next hops, except a prefix our own blocks or workloads take (we own
those locally), one inside a Service CIDR (kube-proxy, not a route, delivers Service traffic), and the
next hops that are our own workloads' addresses (the last line against a path through a local pod).
:class:`LearnedRoutes` keeps each prefix's route and the node's total, and on each calculation redoes only
the prefixes that came, went or changed next hops, whose destination the local part took or freed, or that
name a next hop that became or stopped being a local address; everything when the Service CIDRs change.
One route learned on a node that holds 250 so costs one prefix's work plus a comparison of the learned
table's values, where a pass over every prefix on each BGP update cost ~1.5 ms (measured in-process).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet

from felix.desired import RouteSpec
from felix.services import ServiceCIDRs, is_service_prefix
from felix.wiring import unindex

_log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1 << 16)
def learned_prefix_text(prefix: str) -> str | None:
    """The canonical text of a learned prefix (host bits masked), None if it is not one (cached: a prefix's add
    and its drop both ask)."""
    try:
        return str(ipaddress.ip_network(prefix, strict=False))
    except ValueError:
        return None


class LearnedRoutes:
    """The learned routes of one node, updated incrementally (see the module docstring).

    Two prefixes that spell one destination differently (BGP speakers send canonical text; a test may not):
    the greatest prefix text with a route wins, as in a calculation from cold. Not thread-safe: the agent's
    loop thread.
    """

    def __init__(self) -> None:
        self._hops: dict[str, tuple[str, ...]] = {}          # prefix -> next hops, as of the last update
        self._claims: dict[str, dict[str, RouteSpec | None]] = {}   # destination -> prefix -> its route
        self._by_hop: dict[str, set[str]] = {}               # next hop -> the prefixes that name it
        self._route_of: dict[str, RouteSpec] = {}            # destination -> the route it gets
        self._taken: AbstractSet[str] = frozenset()
        self._own_ips: AbstractSet[str] = frozenset()
        self._svc: ServiceCIDRs | None = None
        # The total as a dict used as a set: a frozenset built from it reuses the hashes the dict stored.
        self.routes: dict[RouteSpec, None] = {}

    def update(self, learned: Mapping[str, Sequence[str]], taken: AbstractSet[str], own_ips: AbstractSet[str],
               svc_cidrs: ServiceCIDRs) -> None:
        """Bring the routes to ``learned`` (prefix -> next hops), not ``taken`` (our own destinations), via
        hops that are not ``own_ips``, outside ``svc_cidrs``."""
        if svc_cidrs != self._svc:
            redo = set(self._hops) | set(learned)
        else:
            redo = {p for p, hops in learned.items() if self._hops.get(p) != hops}
            redo.update(self._hops.keys() - learned.keys())
            if taken != self._taken:
                for dst in taken ^ self._taken:
                    redo.update(self._claims.get(dst, ()))
            if own_ips != self._own_ips:
                for ip in own_ips ^ self._own_ips:
                    redo.update(self._by_hop.get(ip, ()))
        self._taken, self._own_ips, self._svc = taken, own_ips, svc_cidrs
        touched: set[str] = set()
        for prefix in redo:
            self._drop(prefix, touched)
            hops = learned.get(prefix)
            if hops is not None:
                self._add(prefix, hops, touched)
        for dst in touched:
            self._resolve(dst)

    def _add(self, prefix: str, hops: Sequence[str], touched: set[str]) -> None:
        hops = hops if isinstance(hops, tuple) else tuple(hops)
        self._hops[prefix] = hops
        dst = learned_prefix_text(prefix)
        if dst is None:
            _log.warning("ignoring learned route with a bad prefix prefix=%r", prefix)
            return
        for hop in hops:
            self._by_hop.setdefault(hop, set()).add(prefix)
        self._claims.setdefault(dst, {})[prefix] = self._route(dst, hops)
        touched.add(dst)

    def _route(self, dst: str, hops: tuple[str, ...]) -> RouteSpec | None:
        if dst in self._taken:
            return None
        svc = self._svc
        if svc is not None and svc.all() and is_service_prefix(ipaddress.ip_network(dst), svc):
            return None   # other nodes announce it too
        own = self._own_ips
        next_hops = tuple(sorted({h for h in hops if h and h not in own}))
        return RouteSpec(dst=dst, kind="learned", next_hops=next_hops) if next_hops else None

    def _drop(self, prefix: str, touched: set[str]) -> None:
        hops = self._hops.pop(prefix, None)
        if hops is None:
            return
        dst = learned_prefix_text(prefix)
        if dst is None:
            return
        for hop in hops:
            unindex(self._by_hop, hop, prefix)
        unindex(self._claims, dst, prefix)
        touched.add(dst)

    def _resolve(self, dst: str) -> None:
        old = self._route_of.pop(dst, None)
        if old is not None:
            del self.routes[old]
        claims = self._claims.get(dst, {})
        route = next((claims[p] for p in sorted(claims, reverse=True) if claims[p] is not None), None)
        if route is not None:
            self._route_of[dst] = route
            self.routes[route] = None
