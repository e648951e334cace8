"""felix.dataplane: hands each slice of the desired state to the one driver that owns it, in order.

Order (Felix's): interfaces → ipsets (create/update) → iptables → ipsets (delete)
→ routes. Interfaces first so a new workload has proxy ARP before it has a
route; ipsets before the rules that reference them, and deleted only after no
rule refers to them any more. Everything here runs on the agent's single kernel
I/O thread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from felix.calc import Link
from felix.desired import DesiredState
from felix.drivers.interfaces import InterfaceDriver
from felix.drivers.routes import RouteDriver
from l3net import metrics

_log = logging.getLogger(__name__)


class IpsetsDriver(Protocol):
    """``felix.drivers.ipsets.IpsetDriver`` (the policy engineer's): ``{name: (type, members)}``."""

    def apply_adds(self, desired: Mapping[str, tuple[str, frozenset[str]]]) -> int: ...

    def apply_deletes(self, desired: Mapping[str, tuple[str, frozenset[str]]]) -> int: ...


class IptablesDriver(Protocol):
    """``felix.drivers.iptables.IptablesDriver`` (the policy engineer's)."""

    def apply_program(self, program: Any) -> int: ...


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

    def start(self) -> None:
        """Read the kernel's current state (adopt what carries our marks). Writes nothing."""
        self.routes.resync()

    def refresh(self, reason: str) -> None:
        """Forget cached kernel views so the next apply re-reads and heals drift."""
        self.routes.invalidate(reason)
        self.interfaces.invalidate(reason)
        # The policy drivers re-read iptables-save / ipset save on every apply: nothing to forget.

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
        res = self.routes.apply(desired.routes, keep_stale_learned=keep_stale_learned)
        writes += res.writes
        return ApplyReport(writes=writes, missing_links=res.missing_links, route_conflicts=res.conflicts)
