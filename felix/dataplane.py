"""felix.dataplane: hands each slice of the desired state to the one driver that owns it, in order.

Order (Felix's): interfaces → ipsets (create/update) → iptables → ipsets (delete)
→ routes. Interfaces first so a new workload has proxy ARP before it has a
route; ipsets before the rules that reference them, and deleted only after no
rule refers to them any more. Everything here runs on the agent's single kernel
I/O thread.

The CNI plugin writes a workload's /32 (our protocol number) before the agent
sees the workload. Before an apply that adds a workload route, or whose
workload interface vanished (the kernel dropped its routes with it), the route
cache is re-read, so the driver adopts the plugin's route (same destination and
interface at another metric counts as the same route) instead of writing a
second one, and does not try to delete a route the kernel already removed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from felix.calc import Link
from felix.desired import DesiredState, RouteSpec
from felix.drivers.interfaces import InterfaceDriver
from felix.drivers.routes import RouteDriver
from l3net import metrics

_log = logging.getLogger(__name__)


class IpsetsDriver(Protocol):
    """``felix.drivers.ipsets.IpsetDriver`` (the policy engineer's): ``{name: (type, members)}``."""

    def apply_adds(self, desired: Mapping[str, tuple[str, frozenset[str]]]) -> int: ...

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


class Dataplane:
    """The drivers of one node, applied in dependency order. Not thread-safe (kernel I/O thread)."""

    def __init__(self, routes: RouteDriver, interfaces: InterfaceDriver, *,
                 ipsets: IpsetsDriver | None = None, iptables: IptablesDriver | None = None) -> None:
        self.routes = routes
        self.interfaces = interfaces
        self.ipsets = ipsets
        self.iptables = iptables
        self._workload_routes: dict[str, RouteSpec] | None = None  # by dst, as last applied

    def start(self) -> None:
        """Read the kernel's current state (adopt what carries our marks). Writes nothing."""
        self.routes.resync()

    def refresh(self, reason: str) -> None:
        """Forget cached kernel views so the next apply re-reads and heals drift.

        Every driver keeps a view of what it wrote and re-reads the kernel only when told
        (or after a failure); this is where the loop's periodic refresh tells them all, so
        a route, l3n- chain, hook or ipset changed behind our back is repaired on the next apply.
        """
        self.routes.invalidate(reason)
        self.interfaces.invalidate(reason)
        if self.iptables is not None:
            self.iptables.invalidate(reason)
        if self.ipsets is not None:
            self.ipsets.invalidate(reason)

    def _reread_workload_routes(self, desired: DesiredState, links: Mapping[str, Link]) -> None:
        """Invalidate the route cache when the CNI plugin or the kernel may have changed workload routes."""
        now = {r.dst: r for r in desired.routes if r.kind == "workload"}
        before, self._workload_routes = self._workload_routes, now
        if before is None:
            return  # the first apply follows start(), which has just read the table
        indexes = {link.index for link in links.values()}
        added = any(before.get(dst) != r for dst, r in now.items())
        vanished = any(r.ifindex not in indexes for dst, r in before.items() if dst not in now)
        if added or vanished:
            self.routes.invalidate("workload routes added" if added else "workload interface removed")

    def apply(self, desired: DesiredState, links: Mapping[str, Link], *, keep_stale_learned: bool) -> ApplyReport:
        writes = self.interfaces.apply(desired.interfaces, links)
        program = desired.policy
        if program is not None and self.iptables is not None and self.ipsets is not None:
            writes += self.ipsets.apply_adds(program.ipsets)
            writes += self.iptables.apply_program(program)
            writes += self.ipsets.apply_deletes(program.ipsets)
            metrics.IPSETS.set(len(program.ipsets))
            for table, chains in program.chains.items():
                metrics.IPTABLES_CHAINS.labels(table=table).set(len(chains))
                metrics.IPTABLES_RULES.labels(table=table).set(sum(len(r) for r in chains.values()))
        self._reread_workload_routes(desired, links)
        res = self.routes.apply(desired.routes, keep_stale_learned=keep_stale_learned)
        writes += res.writes
        return ApplyReport(writes=writes, missing_links=res.missing_links, route_conflicts=res.conflicts)
