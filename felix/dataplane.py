"""felix.dataplane: hands each slice of the desired state to the one driver that owns it, in order.

Two independent sides. The route side: interfaces → routes (interfaces first so
a new workload has proxy ARP before it has a route). The policy side, in
Felix's order: ipsets (create/update) → iptables → ipsets (delete): ipsets
before the rules that reference them, and deleted only after no rule refers to
them any more. The agent's loop runs each side on its own I/O thread with its
own retry and backoff, so a held iptables lock or a refused ruleset never
delays a route (DESIGN §7); each side's drivers are only ever called from that
side's thread.

The CNI plugin writes a workload's /32 (our protocol number, the agent's metric)
before the agent sees the workload. Before an apply that adds a workload route,
only the routes through that workload's interface are re-read (a filtered dump,
not the whole table), so the driver adopts the plugin's route (at another metric
too: an older plugin's) instead of writing it again. A workload whose interface
vanished needs nothing: the kernel dropped its routes, and deleting a route that
is already gone counts as done.

Routes the kernel refuses (an unreachable next hop, a vanished interface) are
not failures of the apply: the report lists them, :meth:`Dataplane.warnings`
describes them for the readiness body, and they are retried when the links
change or on the next refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from felix.desired import DesiredState, NatOutgoing, RouteSpec
from felix.drivers.interfaces import InterfaceDriver
from felix.drivers.routes import RouteApplyResult, RouteDriver, RouteRefusal, RouteWriteError
from felix.links import Link
from l3net import metrics
from policy.nat import render_nat_outgoing, with_nat

_log = logging.getLogger(__name__)


class IpsetsDriver(Protocol):
    """``felix.drivers.ipsets.IpsetDriver`` (the policy engineer's): ``{name: (type, members)}``."""

    def apply_adds(self, desired: Mapping[str, tuple[str, frozenset[str]]], *,
                   then: Callable[[], int] | None = None) -> int: ...

    def apply_deletes(self, desired: Mapping[str, tuple[str, frozenset[str]]]) -> int: ...

    def invalidate(self, reason: str = "") -> None: ...


class IptablesDriver(Protocol):
    """``felix.drivers.iptables.IptablesDriver`` (the policy engineer's)."""

    def apply_program(self, program: Any) -> int: ...

    def invalidate(self, reason: str = "") -> None: ...


@dataclass
class ApplyReport:
    writes: int
    missing_links: list[str]
    route_conflicts: list[str]
    route_refused: list[RouteRefusal] = field(default_factory=list)
    route_invalid: list[str] = field(default_factory=list)


class Dataplane:
    """The drivers of one node, applied in dependency order. Not thread-safe (kernel I/O thread)."""

    def __init__(self, routes: RouteDriver, interfaces: InterfaceDriver, *,
                 ipsets: IpsetsDriver | None = None, iptables: IptablesDriver | None = None) -> None:
        self.routes = routes
        self.interfaces = interfaces
        self.ipsets = ipsets
        self.iptables = iptables
        self._routes: frozenset[RouteSpec] | None = None  # the desired routes, as last applied
        self._links: dict[str, Link] | None = None  # as last applied
        self._last: ApplyReport | None = None

    def start(self) -> None:
        """Read the kernel's current state (adopt what carries our marks). Writes nothing."""
        self.routes.resync()

    @property
    def has_policy(self) -> bool:
        return self.iptables is not None and self.ipsets is not None

    def refresh(self, reason: str) -> None:
        """Forget cached kernel views so the next apply re-reads and heals drift.

        Every driver keeps a view of what it wrote and re-reads the kernel only when told
        (or after a failure); this is where the loop's periodic refresh tells them all, so
        a route, l3n- chain, hook or ipset changed behind our back is repaired on the next apply.
        """
        self.refresh_routes(reason)
        self.refresh_policy(reason)

    def refresh_routes(self, reason: str) -> None:
        """:meth:`refresh` for the route side (routes, interfaces): call on the route side's thread."""
        self.routes.invalidate(reason)
        self.interfaces.invalidate(reason)

    def refresh_policy(self, reason: str) -> None:
        """:meth:`refresh` for the policy side (iptables, ipsets): call on the policy side's thread."""
        if self.iptables is not None:
            self.iptables.invalidate(reason)
        if self.ipsets is not None:
            self.ipsets.invalidate(reason)

    def _reread_workload_routes(self, desired: DesiredState, links: Mapping[str, Link]) -> None:
        """Re-read the routes through new workload interfaces, and retry refused routes when links changed."""
        now = desired.routes if isinstance(desired.routes, frozenset) else frozenset(desired.routes)
        before, self._routes = self._routes, now
        links_before, self._links = self._links, dict(links)
        if before is None:
            return  # the first apply follows start(), which has just read the table
        if links_before != self._links:
            self.routes.retry_refused("links changed")
        new_ifs = set()
        # A workload route not in the last desired set is new or changed (one route per destination): only
        # those, not every route of the node, are looked at.
        for r in now - before:
            if r.kind == "workload":
                idx = r.ifindex if r.ifindex is not None else getattr(links.get(r.ifname or ""), "index", None)
                if idx is not None:
                    new_ifs.add(idx)
        if new_ifs:
            self.routes.reread_interfaces(new_ifs)

    def warnings(self) -> dict[str, str]:
        """Per-route conditions of the last apply that do not make the node unready, for the readiness body."""
        rep = self._last
        if rep is None:
            return {}
        out: dict[str, str] = {}
        if rep.route_refused:
            shown = "; ".join(ref.describe() for ref in rep.route_refused[:10])
            more = f" (and {len(rep.route_refused) - 10} more)" if len(rep.route_refused) > 10 else ""
            out["routesRefused"] = f"{len(rep.route_refused)} routes refused by the kernel: {shown}{more}"
        if rep.route_conflicts:
            out["routeConflicts"] = (f"{len(rep.route_conflicts)} routes held by a foreign route: "
                                     + ", ".join(rep.route_conflicts[:10]))
        if rep.route_invalid:
            out["routesInvalid"] = f"{len(rep.route_invalid)} malformed routes skipped: " + "; ".join(
                rep.route_invalid[:10])
        return out

    def apply(self, desired: DesiredState, links: Mapping[str, Link], *, keep_stale_learned: bool) -> ApplyReport:
        """Both sides in one call, policy first (tests and tools; the agent's loop applies each side on its own)."""
        writes = self.apply_policy(desired.policy, desired.nat) if desired.policy is not None else 0
        report = self.apply_routes(desired, links, keep_stale_learned=keep_stale_learned)
        report.writes += writes
        return report

    def apply_policy(self, program: Any, nat: NatOutgoing | None = None) -> int:
        """The policy side, in Felix's order: ipsets (create/update) → iptables → ipsets (delete).

        ``nat`` (natOutgoing) rides along as the ``nat`` table of the same program: one owner
        for every l3n- chain and set, and the same atomic restore per table.

        Independent of the route side: it may run on another thread at the same time
        (it touches no route or sysctl). Raises what the drivers raise when the kernel refuses.
        """
        if self.iptables is None or self.ipsets is None:
            return 0
        nat = nat or NatOutgoing()
        program = with_nat(program, render_nat_outgoing(nat.masq_pools, nat.all_pools))
        iptables = self.iptables
        # the iptables apply follows the ipset phase, or runs alongside it when that only moves members
        writes = self.ipsets.apply_adds(program.ipsets, then=lambda: iptables.apply_program(program))
        writes += self.ipsets.apply_deletes(program.ipsets)
        metrics.IPSETS.set(len(program.ipsets))
        for table, chains in program.chains.items():
            metrics.IPTABLES_CHAINS.labels(table=table).set(len(chains))
            metrics.IPTABLES_RULES.labels(table=table).set(sum(len(r) for r in chains.values()))
        return writes

    def apply_routes(self, desired: DesiredState, links: Mapping[str, Link], *,
                     keep_stale_learned: bool) -> ApplyReport:
        """The route side: interface settings, then routes. Never waits for iptables or ipsets."""
        writes = self.interfaces.apply(desired.interfaces, links)
        self._reread_workload_routes(desired, links)
        try:
            res = self.routes.apply(desired.routes, keep_stale_learned=keep_stale_learned)
        except RouteWriteError as exc:
            if exc.result is not None:
                self._last = self._report(writes + exc.result.writes, exc.result)
            raise
        self._last = self._report(writes + res.writes, res)
        return self._last

    @staticmethod
    def _report(writes: int, res: RouteApplyResult) -> ApplyReport:
        return ApplyReport(writes=writes, missing_links=res.missing_links, route_conflicts=res.conflicts,
                           route_refused=res.refused, route_invalid=res.invalid)
