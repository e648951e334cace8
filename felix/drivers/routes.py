"""felix.drivers.routes: the only writer of l3net's routes in the main routing table.

A route is ours if and only if it carries ``ROUTE_PROTO``; any other route is
never modified or deleted, and a desired route whose slot (destination and
metric) is held by a foreign route is not written (a conflict, logged and
counted). The driver keeps a cache of our routes as the kernel has them: it
is filled by :meth:`RouteDriver.resync` (at start, which is how routes left by
a previous agent are *adopted* instead of flushed, and periodically, which
heals routes changed behind our back) and kept current by every write.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from felix.desired import RouteSpec
from l3net import metrics
from l3net.constants import MAIN_TABLE, ROUTE_PROTO, WORKLOAD_ROUTE_METRIC

_log = logging.getLogger(__name__)

SCOPE_UNIVERSE = 0
SCOPE_LINK = 253
RTN_UNICAST = 1
RTN_BLACKHOLE = 6


@dataclass(frozen=True)
class KernelRoute:
    """One route of the main table in the form the driver compares.

    ``gateways`` is sorted (ECMP next hops); ``oif`` is the output interface index
    (None when the kernel chooses it from the gateway).
    """

    dst: str
    proto: int
    metric: int
    type: int = RTN_UNICAST
    scope: int = SCOPE_UNIVERSE
    oif: int | None = None
    gateways: tuple[str, ...] = ()
    table: int = MAIN_TABLE

    @property
    def slot(self) -> tuple[str, int]:
        """What the kernel matches on replace: destination and metric (same table)."""
        return (self.dst, self.metric)


class RouteNetlink(Protocol):
    """The narrow netlink seam the driver writes through (real: :class:`PyrouteNetlink`)."""

    def dump_routes(self) -> list[KernelRoute]:
        """Every route of the main table (all protocols)."""
        ...

    def link_index(self, ifname: str) -> int | None: ...

    def replace(self, route: KernelRoute) -> None: ...

    def delete(self, route: KernelRoute) -> None: ...


@dataclass
class RouteApplyResult:
    writes: int = 0
    missing_links: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


class RouteDriver:
    """Owns every route with ``ROUTE_PROTO`` in the main table; diff, then apply the difference.

    Runs on the agent's kernel I/O thread (not thread-safe). Idempotent: a second
    :meth:`apply` with the same desired routes and an unchanged kernel writes nothing.
    A failed netlink write propagates (the loop retries with backoff) and marks the
    cache stale so the next apply starts from a fresh dump.
    """

    def __init__(self, nl: RouteNetlink, *, proto: int = ROUTE_PROTO, metric: int = WORKLOAD_ROUTE_METRIC,
                 batch_size: int = 200) -> None:
        self.nl = nl
        self.proto = proto
        self.metric = metric
        self.batch_size = batch_size
        self._ours: dict[tuple[str, int], KernelRoute] = {}
        self._foreign: set[tuple[str, int]] = set()
        self._stale_cache = True

    # -- kernel view --------------------------------------------------------
    def resync(self) -> None:
        """Re-read the kernel table: adopt our routes as they are, note foreign slots."""
        with metrics.ROUTE_RESYNC_TIME.time():
            routes = self.nl.dump_routes()
        self._ours = {r.slot: r for r in routes if r.proto == self.proto and r.table == MAIN_TABLE}
        self._foreign = {r.slot for r in routes if r.proto != self.proto and r.table == MAIN_TABLE}
        self._stale_cache = False
        metrics.ROUTE_RESYNCS.inc()
        self._export_counts()
        _log.debug("route table re-read ours=%d foreign_slots=%d", len(self._ours), len(self._foreign))

    def invalidate(self, reason: str) -> None:
        _log.info("route cache invalidated reason=%s", reason)
        self._stale_cache = True

    @property
    def programmed(self) -> dict[tuple[str, int], KernelRoute]:
        return dict(self._ours)

    # -- apply --------------------------------------------------------------
    def _wanted(self, spec: RouteSpec) -> KernelRoute | None:
        if spec.kind == "workload":
            idx = spec.ifindex if spec.ifindex is not None else self.nl.link_index(spec.ifname or "")
            if idx is None:
                return None
            return KernelRoute(dst=spec.dst, proto=self.proto, metric=self.metric, scope=SCOPE_LINK, oif=idx)
        if spec.kind == "blackhole":
            return KernelRoute(dst=spec.dst, proto=self.proto, metric=self.metric, type=RTN_BLACKHOLE)
        return KernelRoute(dst=spec.dst, proto=self.proto, metric=self.metric,
                           gateways=tuple(sorted(spec.next_hops)))

    @staticmethod
    def _same(have: KernelRoute, want: KernelRoute) -> bool:
        if (have.type, have.scope, have.gateways) != (want.type, want.scope, want.gateways):
            return False
        return want.oif is None or have.oif == want.oif

    @staticmethod
    def _is_learned(route: KernelRoute) -> bool:
        return route.type == RTN_UNICAST and bool(route.gateways)

    def apply(self, desired: Iterable[RouteSpec], *, keep_stale_learned: bool = False,
              sweep: bool = True) -> RouteApplyResult:
        """Make our routes equal ``desired``.

        ``keep_stale_learned``: during the startup grace, BGP has not converged yet, so
        learned routes we no longer see are kept rather than removed. ``sweep=False``
        adds and changes but deletes nothing.
        """
        if self._stale_cache:
            self.resync()
        result = RouteApplyResult()
        ops: list[tuple[str, KernelRoute]] = []
        wanted_slots: set[tuple[str, int]] = set()
        for spec in sorted(desired):
            want = self._wanted(spec)
            if want is None:
                result.missing_links.append(spec.ifname or "")
                continue
            have = self._ours.get(want.slot)
            if have is not None and self._same(have, want):
                wanted_slots.add(want.slot)
                continue
            # Our route for this destination at another metric (e.g. the CNI plugin's own /32,
            # written before the agent saw the workload) is adopted as is rather than churned.
            twin = next((r for r in self._ours.values() if r.dst == want.dst and self._same(r, want)), None)
            if twin is not None:
                wanted_slots.add(twin.slot)
                continue
            wanted_slots.add(want.slot)
            if have is None and want.slot in self._foreign:
                result.conflicts.append(spec.dst)
                continue
            ops.append(("replace", want))
        if sweep:
            for slot, have in sorted(self._ours.items()):
                if slot in wanted_slots:
                    continue
                if keep_stale_learned and self._is_learned(have):
                    continue
                ops.append(("delete", have))
        if result.conflicts:
            _log.warning("routes not written: a foreign route holds the slot dsts=%s", result.conflicts)
        metrics.ROUTE_CONFLICTS.set(len(result.conflicts))
        try:
            for start in range(0, len(ops), self.batch_size):
                batch = ops[start:start + self.batch_size]
                metrics.ROUTE_BATCH_SIZE.observe(len(batch))
                for op, route in batch:
                    self._write(op, route)
                    result.writes += 1
        except Exception:
            self.invalidate("route write failed")
            raise
        finally:
            self._export_counts()
        if ops:
            _log.info("routes applied writes=%d missing_links=%d", result.writes, len(result.missing_links))
        return result

    def _write(self, op: str, route: KernelRoute) -> None:
        if op == "replace":
            _log.debug("route replace dst=%s type=%d oif=%s via=%s", route.dst, route.type, route.oif,
                       route.gateways)
            self.nl.replace(route)
            self._ours[route.slot] = route
        else:
            _log.debug("route delete dst=%s metric=%d", route.dst, route.metric)
            self.nl.delete(route)
            self._ours.pop(route.slot, None)
        metrics.ROUTE_WRITES.labels(op=op).inc()

    def _export_counts(self) -> None:
        counts = {"workload": 0, "blackhole": 0, "learned": 0}
        for r in self._ours.values():
            if r.type == RTN_BLACKHOLE:
                counts["blackhole"] += 1
            elif r.gateways:
                counts["learned"] += 1
            else:
                counts["workload"] += 1
        for kind, n in counts.items():
            metrics.ROUTES_PROGRAMMED.labels(kind=kind).set(n)


# -- the real netlink ---------------------------------------------------------
def _attr(msg: Any, name: str) -> Any:
    get = getattr(msg, "get_attr", None)
    if get is not None:
        return get(name)
    for k, v in msg.get("attrs", []):
        if k == name:
            return v
    return None


def _to_kernel_route(msg: Any) -> KernelRoute | None:
    family = msg["family"]
    dst = _attr(msg, "RTA_DST") or ("0.0.0.0" if family == 2 else "::")
    try:
        net = ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False)
    except ValueError:
        return None
    gateways: list[str] = []
    gw = _attr(msg, "RTA_GATEWAY")
    if gw:
        gateways.append(gw)
    for hop in _attr(msg, "RTA_MULTIPATH") or []:
        hop_gw = _attr(hop, "RTA_GATEWAY")
        if hop_gw:
            gateways.append(hop_gw)
    table = _attr(msg, "RTA_TABLE") or msg["table"]
    return KernelRoute(dst=str(net), proto=msg["proto"], metric=_attr(msg, "RTA_PRIORITY") or 0,
                       type=msg["type"], scope=msg["scope"], oif=_attr(msg, "RTA_OIF"),
                       gateways=tuple(sorted(gateways)), table=table)


class PyrouteNetlink:
    """:class:`RouteNetlink` over pyroute2's ``IPRoute`` (optionally in another netns).

    Not thread-safe: use it from one thread only (the agent's kernel I/O thread).
    Netlink errors propagate as ``pyroute2.NetlinkError``.
    """

    def __init__(self, netns: str | None = None) -> None:
        from pyroute2 import IPRoute

        self.ipr = IPRoute(netns=netns) if netns else IPRoute()
        self._links: dict[str, int] = {}

    def close(self) -> None:
        self.ipr.close()

    def dump_routes(self) -> list[KernelRoute]:
        out = []
        for family in (2, 10):
            for msg in self.ipr.route("dump", family=family, table=MAIN_TABLE):
                r = _to_kernel_route(msg)
                if r is not None and r.table == MAIN_TABLE:
                    out.append(r)
        return out

    def refresh_links(self) -> dict[str, int]:
        self._links = {link.get_attr("IFLA_IFNAME"): link["index"] for link in self.ipr.get_links()}
        return dict(self._links)

    def link_index(self, ifname: str) -> int | None:
        idx = self._links.get(ifname)
        if idx is None:
            idx = self.refresh_links().get(ifname)
        return idx

    def _args(self, route: KernelRoute) -> dict[str, Any]:
        args: dict[str, Any] = {"dst": route.dst, "table": route.table, "proto": route.proto,
                                "priority": route.metric, "type": route.type, "scope": route.scope}
        if route.oif is not None:
            args["oif"] = route.oif
        if len(route.gateways) == 1:
            args["gateway"] = route.gateways[0]
        elif route.gateways:
            args["multipath"] = [{"gateway": g} for g in route.gateways]
        return args

    def replace(self, route: KernelRoute) -> None:
        self.ipr.route("replace", **self._args(route))

    def delete(self, route: KernelRoute) -> None:
        # Delete by exact slot and protocol, so a foreign route can never match.
        self.ipr.route("del", dst=route.dst, table=route.table, proto=route.proto, priority=route.metric,
                       type=route.type, scope=route.scope)
