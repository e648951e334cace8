"""felix.desired: the value types the calculation produces and the drivers consume.

Everything here is immutable and hashable, so "did the desired state change?"
is an equality test and the loop can hand one value to several drivers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # annotations only: keeps this value module a leaf the drivers import cheaply
    from bgp.view import NodeBGPView
    from policy.compiler import PolicyProgram

RouteKind = Literal["workload", "blackhole", "learned"]


@dataclass(frozen=True, order=True)
class RouteSpec:
    """One route l3net wants in the main table (always with ``ROUTE_PROTO``).

    ``workload``: ``dst dev <ifname> scope link``; ``blackhole``: ``blackhole dst``;
    ``learned``: ``dst via <next_hops>`` (several = ECMP, sorted).
    """

    dst: str
    kind: RouteKind
    ifname: str | None = None
    ifindex: int | None = None
    next_hops: tuple[str, ...] = ()


@dataclass(frozen=True, order=True)
class InterfaceSpec:
    """Host-side settings for one workload interface (proxy ARP, proxy_delay, accept_ra)."""

    ifname: str


@dataclass(frozen=True)
class Advertisement:
    """One prefix this node asks its BGP speaker to announce, and why (``service``: :mod:`felix.services`)."""

    prefix: str
    reason: Literal["block", "borrowed", "service"]


@dataclass(frozen=True)
class NatOutgoing:
    """What Calico's ``natOutgoing`` asks of this node's ``nat`` table (rendered by :mod:`policy.nat`).

    ``masq_pools``: the IPv4 pools with ``natOutgoing: true``; ``all_pools``: every IPv4 pool
    (disabled ones too: disabling a pool stops allocation, not its running pods). Traffic from a
    masq pool to anything outside every pool is masqueraded. Both sorted; empty masq_pools means
    no NAT at all (l3net's nat chains are removed).
    """

    masq_pools: tuple[str, ...] = ()
    all_pools: tuple[str, ...] = ()


@dataclass(frozen=True)
class DesiredState:
    """The whole dataplane this node should have, computed by :func:`felix.calc.compute`.

    ``policy`` (None until policy is wired) and ``bgp_view`` (None until BGP is wired)
    are frozen dataclasses of tuples, frozensets and FrozenDicts, so the whole state hashes.
    """

    routes: frozenset[RouteSpec] = frozenset()
    interfaces: frozenset[InterfaceSpec] = frozenset()
    advertisements: frozenset[Advertisement] = frozenset()
    policy: PolicyProgram | None = None
    bgp_view: NodeBGPView | None = None
    nat: NatOutgoing = NatOutgoing()
    # Counts the metrics and the readiness report show (not used by drivers).
    local_endpoints: int = 0
    local_blocks: int = 0
    waiting_for_interfaces: tuple[str, ...] = field(default=())
    # Keys of local WorkloadEndpoints skipped because an address lies outside every IPPool.
    rejected_workloads: tuple[str, ...] = field(default=())
