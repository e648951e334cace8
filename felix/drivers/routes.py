"""felix.drivers.routes: the only writer of l3net's routes in the main routing table.

A route is ours if and only if it carries ``ROUTE_PROTO``; any other route is
never modified or deleted, and a desired route whose slot (destination and
metric) is held by a foreign route is not written (a conflict, logged and
counted). A slot not known to be ours is written create-exclusive, so a foreign
route that appeared there since the last re-read makes the kernel answer EEXIST
instead of being replaced: that slot is re-read and becomes a conflict. The
driver keeps a cache of our routes as the kernel has them: it is filled by
:meth:`RouteDriver.resync` (at start, which is how routes left by a previous
agent are *adopted* instead of flushed, and periodically, which heals routes
changed behind our back) and kept current by every write.

A route the kernel refuses for what it is (a next hop not on any link, an
interface that vanished in a race, a malformed route: see
:data:`REFUSAL_ERRNOS`) is a per-route condition, like a conflict: logged once
per change with the kernel's reason, counted, kept out of the writes until the
next refresh or link change, and never a failure of the apply. Any other write
error (out of memory or buffer space, a lost answer, no permission) fails the
apply, which the loop retries with bounded backoff.

The wire format and the real socket are :mod:`l3net.rtnl`; its public
names are re-exported here.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from felix.desired import RouteSpec
from l3net import metrics
from l3net.constants import MAIN_TABLE, ROUTE_PROTO, WORKLOAD_ROUTE_METRIC
from l3net.rtnl import (
    CREATE,
    DELETE,
    NLM_F_ACK,
    NLMSG_ERROR,
    REPLACE,
    RTM_DELROUTE,
    RTM_GETROUTE,
    RTM_NEWROUTE,
    RTN_BLACKHOLE,
    RTN_UNICAST,
    SCOPE_LINK,
    SCOPE_UNIVERSE,
    KernelRoute,
    NetnsGuardError,
    PyrouteNetlink,
    canonical_dst,
    canonical_ip,
    encode_route,
    parse_errors,
    parse_route_dump,
    socket_netns,
)
from l3net.workload_kernel import workload_route

__all__ = [
    "CREATE",
    "DELETE",
    "NLMSG_ERROR",
    "NLM_F_ACK",
    "REFUSAL_ERRNOS",
    "REPLACE",
    "RTM_DELROUTE",
    "RTM_GETROUTE",
    "RTM_NEWROUTE",
    "RTN_BLACKHOLE",
    "RTN_UNICAST",
    "SCOPE_LINK",
    "SCOPE_UNIVERSE",
    "KernelRoute",
    "NetnsGuardError",
    "PyrouteNetlink",
    "RouteApplyResult",
    "RouteDriver",
    "RouteNetlink",
    "RouteRefusal",
    "RouteWriteError",
    "canonical_dst",
    "canonical_ip",
    "encode_route",
    "parse_errors",
    "parse_route_dump",
    "socket_netns",
]

_log = logging.getLogger(__name__)

# The kernel refuses this one route, as it is, now: the same write retried at once gets the same answer,
# and no other route is affected. ENETUNREACH/EHOSTUNREACH: the next hop is not on any link (a BGP peer's
# next hop we cannot reach); ENODEV/ENETDOWN: the interface is gone or down (a pod deleted in a race);
# EINVAL/ERANGE/EAFNOSUPPORT/EOPNOTSUPP: the route is malformed or its family is disabled. Everything
# else (ENOMEM, ENOBUFS, EAGAIN, ETIMEDOUT, EPERM, a lost answer ...) says nothing about the route and
# fails the apply.
REFUSAL_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENODEV, errno.ENETDOWN, errno.EINVAL,
                            errno.ERANGE, errno.EAFNOSUPPORT, errno.EOPNOTSUPP})


def errno_name(code: int | None) -> str:
    """``ENETUNREACH`` for 101; the number as text when it has no name (metric label)."""
    return errno.errorcode.get(code or 0, str(code))


class RouteNetlink(Protocol):
    """The narrow netlink seam the driver writes through (real: :class:`PyrouteNetlink`)."""

    def dump_routes(self, oif: int | None = None) -> list[KernelRoute]:
        """Every route of the main table (all protocols); with ``oif``, only those through that interface."""
        ...

    def link_index(self, ifname: str) -> int | None: ...

    def write_batch(self, ops: Sequence[tuple[str, KernelRoute]]) -> list[OSError | None]:
        """Apply ``(REPLACE|CREATE|DELETE, route)`` pairs in order; one entry per op: None or its error.

        ``CREATE`` fails with EEXIST when any route (ours or not) holds the slot.

        Each op is atomic in the kernel: a failed op changed nothing, the others
        are applied regardless. An outcome that could not be learned is an error.
        """
        ...


class RouteRefusal(NamedTuple):
    """One route write the kernel refused with an errno of :data:`REFUSAL_ERRNOS` (immutable)."""

    op: str
    route: KernelRoute
    errno: int
    reason: str

    def describe(self) -> str:
        r = self.route
        if r.type == RTN_BLACKHOLE:
            target = "blackhole"
        elif r.gateways:
            target = "via " + ",".join(r.gateways)
        else:
            target = f"dev index {r.oif}"
        return f"{self.op} {r.dst} {target} metric {r.metric}: {errno_name(self.errno)} ({self.reason})"


class RouteWriteError(OSError):
    """Some route writes of one apply failed for a reason that is not the route's; the rest were applied.

    ``failures`` holds ``(op, route, error)`` per failed write (refusals are not in
    it: they are in ``result.refused``). The errno is the first failure's, so callers
    that only know ``OSError`` keep working. ``result`` is the apply's partial result.
    """

    def __init__(self, failures: list[tuple[str, KernelRoute, OSError]],
                 result: RouteApplyResult | None = None) -> None:
        first = failures[0][2]
        shown = "; ".join(f"{op} {r.dst} metric {r.metric}: {e.strerror or e}" for op, r, e in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(first.errno or errno.EIO, f"{len(failures)} route writes failed: {shown}{more}")
        self.failures = failures
        self.result = result


@dataclass
class RouteApplyResult:
    """What one apply did and what it left out, per route (each list sorted)."""

    writes: int = 0
    missing_links: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # "<dst>: <reason>" of malformed desired routes, skipped
    refused: list[RouteRefusal] = field(default_factory=list)  # refused by the kernel (now or still)


class RouteDriver:
    """Owns every route with ``ROUTE_PROTO`` in the main table; diff, then apply the difference.

    Runs on the agent's kernel I/O thread (not thread-safe). Idempotent: a second
    :meth:`apply` with the same desired routes and an unchanged kernel writes nothing
    (a refused route is not retried until :meth:`retry_refused` or :meth:`invalidate`).
    Changes go out in batches of ``batch_size`` (replaces before deletes, so a route
    moving between metrics is never missing). A failed write does not stop the
    other writes of the apply. Refusals (:data:`REFUSAL_ERRNOS`) end up in
    ``RouteApplyResult.refused``; any other failure raises :class:`RouteWriteError`
    (an ``OSError``) at the end, naming every failed route, and marks the cache stale
    so the next apply re-reads the kernel and re-diffs.
    """

    WANTED_MEMO_MAX = 1 << 16   # remembered desired routes; a node's own and learned routes fit many times over

    def __init__(self, nl: RouteNetlink, *, proto: int = ROUTE_PROTO, metric: int = WORKLOAD_ROUTE_METRIC,
                 batch_size: int = 1000) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1, got {batch_size}")
        self.nl = nl
        self.proto = proto
        self.metric = metric
        self.batch_size = batch_size
        self._wanted_memo: dict[RouteSpec, KernelRoute] = {}
        self._ours: dict[tuple[str, int], KernelRoute] = {}
        self._foreign: set[tuple[str, int]] = set()
        self._stale_cache = True
        self._refused: dict[tuple[str, int], RouteRefusal] = {}
        self._retry_refused = False
        self._last_conflicts: list[str] = []
        self._last_invalid: list[str] = []
        self._by_dst: dict[str, list[KernelRoute]] | None = None   # our routes by destination, per apply
        self._twins = 0   # routes of ours adopted at another metric than the desired one, ever
        self._by_name = 0   # workload routes looked up by interface name, ever
        # Counts every change to the cache from outside an apply's own writes (a re-read of the kernel).
        self._epoch = 0
        # The desired routes of the last apply that left the cache exactly equal to them (nothing refused,
        # conflicting, malformed or waiting for a link), and the epoch then: the next apply needs to look
        # only at the routes that came or went since, not at every route of the node (see _delta).
        self._clean: tuple[frozenset[RouteSpec], int] | None = None

    # -- kernel view --------------------------------------------------------
    def resync(self) -> None:
        """Re-read the kernel table: adopt our routes as they are, note foreign slots."""
        with metrics.ROUTE_RESYNC_TIME.time():
            routes = self.nl.dump_routes()
        self._ours = {r.slot: r for r in routes if r.proto == self.proto and r.table == MAIN_TABLE}
        self._foreign = {r.slot for r in routes if r.proto != self.proto and r.table == MAIN_TABLE}
        self._stale_cache = False
        self._epoch += 1
        metrics.ROUTE_RESYNCS.inc()
        self._export_counts()
        _log.debug("route table re-read ours=%d foreign_slots=%d", len(self._ours), len(self._foreign))

    def reread_interfaces(self, ifindexes: Iterable[int]) -> None:
        """Re-read only the routes through these interfaces (new workload veths).

        The CNI plugin writes a workload's /32 before the agent hears of the workload;
        this adopts it (at whatever metric) without a dump of the whole table. A no-op
        when the cache is stale anyway (the next apply re-reads everything).
        """
        if self._stale_cache:
            return
        for idx in sorted(set(ifindexes)):
            seen = {r.slot: r for r in self.nl.dump_routes(oif=idx) if r.table == MAIN_TABLE and r.oif == idx}
            for slot in [s for s, r in self._ours.items() if r.oif == idx and s not in seen]:
                del self._ours[slot]
                self._epoch += 1
            for slot, r in seen.items():
                if r.proto != self.proto:
                    self._foreign.add(slot)
                    self._epoch += 1
                elif self._ours.get(slot) != r:
                    self._ours[slot] = r
                    self._epoch += 1
        _log.debug("routes re-read for interfaces ifindexes=%s", sorted(set(ifindexes)))

    def invalidate(self, reason: str) -> None:
        """Re-read the whole table on the next apply, and try refused routes again."""
        _log.info("route cache invalidated reason=%s", reason)
        self._stale_cache = True
        self._retry_refused = True

    def retry_refused(self, reason: str) -> None:
        """Try the refused routes again on the next apply (a link or address changed: they may fit now)."""
        if self._refused and not self._retry_refused:
            _log.info("refused routes will be retried count=%d reason=%s", len(self._refused), reason)
        self._retry_refused = True

    @property
    def programmed(self) -> dict[tuple[str, int], KernelRoute]:
        return dict(self._ours)

    @property
    def refused(self) -> list[RouteRefusal]:
        """The routes the kernel refuses now, by destination."""
        return [self._refused[s] for s in sorted(self._refused)]

    # -- apply --------------------------------------------------------------
    def _wanted(self, spec: RouteSpec) -> KernelRoute | None:
        """The route ``spec`` asks for, in the kernel's canonical text (ValueError when it is malformed).

        Remembered per spec when it depends on nothing else (an interface index given, or not a workload
        route): every apply walks every desired route, and building each again was ~2 µs apiece.
        """
        want = self._wanted_memo.get(spec)
        if want is not None:
            return want
        want = self._build_wanted(spec)
        if want is not None and (spec.kind != "workload" or spec.ifindex is not None):
            if len(self._wanted_memo) >= self.WANTED_MEMO_MAX:
                self._wanted_memo.clear()   # routes of the past: rebuilt on demand
            self._wanted_memo[spec] = want
        return want

    def _build_wanted(self, spec: RouteSpec) -> KernelRoute | None:
        dst = canonical_dst(spec.dst)
        if spec.kind == "workload":
            idx = spec.ifindex if spec.ifindex is not None else self.nl.link_index(spec.ifname or "")
            if idx is None:
                return None
            return workload_route(dst, idx, proto=self.proto, metric=self.metric)
        if spec.kind == "blackhole":
            return KernelRoute(dst=dst, proto=self.proto, metric=self.metric, type=RTN_BLACKHOLE)
        if not spec.next_hops:
            raise ValueError("a learned route needs at least one next hop")
        return KernelRoute(dst=dst, proto=self.proto, metric=self.metric,
                           gateways=tuple(sorted({canonical_ip(h) for h in spec.next_hops})))

    @staticmethod
    def _same(have: KernelRoute, want: KernelRoute) -> bool:
        if (have.type, have.scope, have.gateways) != (want.type, want.scope, want.gateways):
            return False
        return want.oif is None or have.oif == want.oif

    @staticmethod
    def _is_learned(route: KernelRoute) -> bool:
        return route.type == RTN_UNICAST and bool(route.gateways)

    def _still_refused(self, op: str, route: KernelRoute) -> RouteRefusal | None:
        """The refusal of exactly this write, when it is not to be retried yet."""
        if self._retry_refused:
            return None
        ref = self._refused.get(route.slot)
        return ref if ref is not None and ref.op == op and ref.route == route else None

    def _diff(self, desired: Iterable[RouteSpec], keep_stale_learned: bool, sweep: bool,
              result: RouteApplyResult) -> list[tuple[str, KernelRoute]]:
        """The writes that turn our cached routes into ``desired`` (pure, no I/O besides link lookups)."""
        delta = self._delta(desired, keep_stale_learned, sweep)
        if delta is not None:
            return self._diff_delta(*delta, result)
        writes, wanted_slots = self._plan_all(desired, result)
        ops: list[tuple[str, KernelRoute]] = writes
        if sweep:
            for slot in sorted(self._ours.keys() - wanted_slots):
                have = self._ours[slot]
                if keep_stale_learned and self._is_learned(have):
                    continue
                ref = self._still_refused(DELETE, have)
                if ref is not None:
                    result.refused.append(ref)
                    continue
                ops.append((DELETE, have))
        result.missing_links.sort()
        result.invalid.sort()
        return ops

    def _delta(self, desired: Iterable[RouteSpec], keep_stale_learned: bool,
               sweep: bool) -> tuple[frozenset[RouteSpec], frozenset[RouteSpec]] | None:
        """(added, removed) desired routes since the last clean apply, when only those need a look: the cache
        holds exactly that apply's routes and nothing was re-read since. None: diff every route."""
        clean = self._clean
        if clean is None or clean[1] != self._epoch or self._stale_cache or self._retry_refused \
                or keep_stale_learned or not sweep or not isinstance(desired, frozenset):
            return None
        removed = clean[0] - desired
        # A removed route's slot comes from the memo: rebuilding it may look up a link that is gone by now
        # (a workload route given by interface name), so one that is not remembered takes the full diff.
        if not all(spec in self._wanted_memo for spec in removed):
            return None
        return desired - clean[0], removed

    def _diff_delta(self, added: frozenset[RouteSpec], removed: frozenset[RouteSpec],
                    result: RouteApplyResult) -> list[tuple[str, KernelRoute]]:
        """:meth:`_diff` from a clean apply: what the added routes need, and the removed routes' slots that no
        added route takes over (every other slot of ours is wanted as it is)."""
        writes, wanted_slots = self._plan_all(added, result)
        gone = set()
        for spec in removed:
            slot = self._wanted_memo[spec].slot   # the clean apply wrote it (see _delta)
            if slot not in wanted_slots and slot in self._ours:
                gone.add(slot)
        ops = writes + [(DELETE, self._ours[slot]) for slot in sorted(gone)]
        result.missing_links.sort()
        result.invalid.sort()
        return ops

    def _plan_all(self, specs: Iterable[RouteSpec],
                  result: RouteApplyResult) -> tuple[list[tuple[str, KernelRoute]], set[tuple[str, int]]]:
        """:meth:`_plan` of each of ``specs``: the writes, in (destination, metric) order, and the slots wanted."""
        writes: list[tuple[str, KernelRoute]] = []
        wanted_slots: set[tuple[str, int]] = set()
        self._by_dst = None
        for spec in specs:
            self._plan(spec, result, writes, wanted_slots)
        writes.sort(key=lambda w: (w[1].dst, w[1].metric))
        return writes, wanted_slots

    def _plan(self, spec: RouteSpec, result: RouteApplyResult, writes: list[tuple[str, KernelRoute]],
              wanted_slots: set[tuple[str, int]]) -> None:
        """Add what ``spec`` needs to ``writes`` (nothing when our route holds it already), its slot to
        ``wanted_slots``, and what keeps it from the kernel to ``result``."""
        if spec.kind == "workload" and spec.ifindex is None:
            self._by_name += 1
        try:
            want = self._wanted(spec)
        except ValueError as exc:
            # Bad data is absence: the route is skipped, named, and everything else goes on.
            result.invalid.append(f"{spec.dst}: {exc}")
            return
        if want is None:
            result.missing_links.append(spec.ifname or "")
            return
        have = self._ours.get(want.slot)
        if have is not None and self._same(have, want):
            wanted_slots.add(want.slot)
            return
        # Our route for this destination at another metric (e.g. the CNI plugin's own /32,
        # written before the agent saw the workload) is adopted as is rather than churned.
        if self._by_dst is None:   # built on first need: O(n) once per apply, not per route
            self._by_dst = {}
            for r in self._ours.values():
                self._by_dst.setdefault(r.dst, []).append(r)
        twin = next((r for r in self._by_dst.get(want.dst, ()) if self._same(r, want)), None)
        if twin is not None:
            wanted_slots.add(twin.slot)
            self._twins += 1
            return
        wanted_slots.add(want.slot)  # whatever of ours holds it now stays until the kernel takes `want`
        if have is None and want.slot in self._foreign:
            result.conflicts.append(want.dst)
            return
        # Replace only what we own: a slot we do not hold is created exclusively, so a foreign route
        # put there since the last re-read is refused by the kernel (EEXIST) rather than overwritten.
        op = REPLACE if have is not None else CREATE
        ref = self._still_refused(op, want)
        if ref is not None:
            result.refused.append(ref)
            return
        writes.append((op, want))

    def apply(self, desired: Iterable[RouteSpec], *, keep_stale_learned: bool = False,
              sweep: bool = True) -> RouteApplyResult:
        """Make our routes equal ``desired``, except what the kernel refuses (``result.refused``).

        ``keep_stale_learned``: during the startup grace, BGP has not converged yet, so
        learned routes we no longer see are kept rather than removed. ``sweep=False``
        adds and changes but deletes nothing. Raises :class:`RouteWriteError` when a
        write failed for a reason other than a refusal (everything else was applied).
        """
        if self._stale_cache:
            self.resync()
        result = RouteApplyResult()
        twins, by_name = self._twins, self._by_name
        ops = self._diff(desired, keep_stale_learned, sweep, result)
        self._clean = None   # until this apply ends clean
        self._retry_refused = False
        failures: list[tuple[str, KernelRoute, OSError]] = []
        taken: list[KernelRoute] = []  # CREATEs answered EEXIST: someone holds the slot
        try:
            for start in range(0, len(ops), self.batch_size):
                self._write(ops[start:start + self.batch_size], failures, result, taken)
            if taken:
                retry = self._reread_taken(taken, result)
                if retry:
                    again: list[KernelRoute] = []
                    self._write(retry, failures, result, again)
                    for route in again:  # taken again within this apply: a conflict until the next re-read
                        result.conflicts.append(route.dst)
                        self._stale_cache = True
        except BaseException:
            self.invalidate("route write failed")
            raise
        finally:
            result.conflicts.sort()
            self._report_skips(result)
            self._export_counts()
        self._settle_refusals(result)
        # An adopted twin (our route at another metric) is a slot no desired route names: only a full diff
        # sweeps it when its route goes. A workload route given by interface name depends on the links, which
        # can change while the desired routes do not.
        clean = not (failures or taken or result.refused or result.conflicts or result.invalid
                     or result.missing_links or keep_stale_learned or not sweep or self._twins != twins
                     or self._by_name != by_name)
        self._clean = (desired, self._epoch) if clean and isinstance(desired, frozenset) else None
        if ops:
            _log.info("routes applied writes=%d refused=%d failed=%d missing_links=%d batches=%d", result.writes,
                      len(result.refused), len(failures), len(result.missing_links),
                      -(-len(ops) // self.batch_size))
        if failures:
            self.invalidate("route write failed")
            raise RouteWriteError(failures, result)
        return result

    def _write(self, batch: Sequence[tuple[str, KernelRoute]], failures: list[tuple[str, KernelRoute, OSError]],
               result: RouteApplyResult, taken: list[KernelRoute]) -> None:
        metrics.ROUTE_BATCH_SIZE.observe(len(batch))
        errors = self.nl.write_batch(batch)
        if len(errors) != len(batch):
            raise RuntimeError(f"netlink returned {len(errors)} outcomes for {len(batch)} route writes")
        self._record(batch, errors, failures, result, taken)

    def _reread_taken(self, taken: list[KernelRoute], result: RouteApplyResult) -> list[tuple[str, KernelRoute]]:
        """Re-read the slots a CREATE found taken: a foreign route is a conflict (never overwritten); our own
        (e.g. the CNI plugin's, written since the last re-read) is adopted and corrected. Returns the writes
        still to do."""
        self._epoch += 1
        want = {r.slot: r for r in taken}
        now = {r.slot: r for r in self.nl.dump_routes() if r.table == MAIN_TABLE and r.slot in want}
        retry: list[tuple[str, KernelRoute]] = []
        for slot, route in sorted(want.items()):
            have = now.get(slot)
            if have is None:
                retry.append((CREATE, route))  # gone again already: the slot is free
            elif have.proto == self.proto:
                self._ours[slot] = have
                if not self._same(have, route):
                    retry.append((REPLACE, route))
            else:
                self._foreign.add(slot)
                result.conflicts.append(route.dst)
                _log.warning("route slot taken by a foreign route since the last re-read, not overwritten dst=%s "
                             "metric=%d proto=%d", route.dst, route.metric, have.proto)
        return retry

    def _report_skips(self, result: RouteApplyResult) -> None:
        """Conflicts and malformed routes: gauges every apply, a log line when the set changes."""
        if result.conflicts != self._last_conflicts:
            if result.conflicts:
                _log.warning("routes not written: a foreign route holds the slot dsts=%s", result.conflicts)
            else:
                _log.info("route conflicts resolved")
            self._last_conflicts = list(result.conflicts)
        if result.invalid != self._last_invalid:
            if result.invalid:
                _log.warning("malformed desired routes skipped routes=%s", result.invalid)
            self._last_invalid = list(result.invalid)
        metrics.ROUTE_CONFLICTS.set(len(result.conflicts))
        metrics.ROUTES_INVALID.set(len(result.invalid))

    def _record(self, batch: Sequence[tuple[str, KernelRoute]], errors: Sequence[OSError | None],
                failures: list[tuple[str, KernelRoute, OSError]], result: RouteApplyResult,
                taken: list[KernelRoute]) -> None:
        """Bring the cache up to date with what the kernel accepted; sort failures into refusals and errors."""
        done = {REPLACE: 0, CREATE: 0, DELETE: 0}
        for (op, route), err in zip(batch, errors, strict=True):
            if err is not None and op == CREATE and err.errno == errno.EEXIST:
                taken.append(route)  # the kernel changed nothing: whoever holds the slot keeps it
                continue
            if err is not None and op == DELETE and err.errno == errno.ESRCH:
                # Already gone (e.g. the kernel dropped it with its interface): the goal is met.
                # The delete matched on our protocol, so no foreign route can have been hit.
                _log.debug("route already absent dst=%s metric=%d", route.dst, route.metric)
                self._ours.pop(route.slot, None)
                continue
            if err is not None:
                metrics.ROUTE_WRITE_FAILURES.labels(errno=errno_name(err.errno)).inc()
                if err.errno in REFUSAL_ERRNOS:
                    # The kernel changed nothing for this op: the cache is still right.
                    result.refused.append(RouteRefusal(op, route, err.errno, err.strerror or str(err)))
                else:
                    failures.append((op, route, err))
                    _log.warning("route write failed op=%s dst=%s metric=%d error=%s", op, route.dst,
                                 route.metric, err)
                continue
            if op != DELETE:
                self._ours[route.slot] = route
            else:
                self._ours.pop(route.slot, None)
            done[op] += 1
        for op, n in done.items():
            if n:
                metrics.ROUTE_WRITES.labels(op=op).inc(n)
                result.writes += n

    def _settle_refusals(self, result: RouteApplyResult) -> None:
        """Remember this apply's refusals; log each new or changed one once, and each that cleared."""
        now = {ref.route.slot: ref for ref in result.refused}
        for slot, ref in sorted(now.items()):
            old = self._refused.get(slot)
            if old is None or (old.op, old.route, old.errno) != (ref.op, ref.route, ref.errno):
                _log.warning("route refused by the kernel, skipped until links change or the next refresh: %s",
                             ref.describe())
        for slot in sorted(self._refused.keys() - now.keys()):
            _log.info("route no longer refused dst=%s metric=%d", slot[0], slot[1])
        self._refused = now
        result.refused.sort(key=lambda ref: ref.route.slot)
        metrics.ROUTES_REFUSED.set(len(now))

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
