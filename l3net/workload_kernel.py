"""l3net.workload_kernel: what a workload's host side is in the kernel, stated once.

Two writers touch a pod's host-side kernel objects, as in Calico: the CNI plugin at ADD (so the pod
routes at once, and also when no agent runs) and felix for as long as the pod lives (it adopts what
the plugin wrote and heals drift). They cannot disagree because both build the objects here and write
routes through one codec, :mod:`l3net.rtnl`: the route is the same slot (destination, metric, table)
with the same attributes, so the second writer finds nothing to change.
"""

from __future__ import annotations

from l3net.constants import ROUTE_PROTO, WORKLOAD_ROUTE_METRIC
from l3net.rtnl import SCOPE_LINK, SCOPE_UNIVERSE, KernelRoute, canonical_dst

__all__ = ["NODE_SYSCTLS", "interface_sysctls", "workload_route"]

# The node forwards between its uplinks and its workloads' veths.
NODE_SYSCTLS: tuple[tuple[str, str], ...] = (("net/ipv4/ip_forward", "1"),)


def interface_sysctls(ifname: str) -> list[tuple[str, str, bool]]:
    """``(path, value, required)`` for one workload interface (Calico's host-side settings).

    Optional entries are skipped when the path does not exist (a kernel without IPv6).
    """
    return [
        (f"net/ipv4/conf/{ifname}/proxy_arp", "1", True),
        # Without this the first packets wait 0.3-0.6 s for the proxy-ARP reply.
        (f"net/ipv4/neigh/{ifname}/proxy_delay", "0", True),
        (f"net/ipv6/conf/{ifname}/accept_ra", "0", False),
        # Until l3net polices IPv6, a pod must not reach the node (or anything) over IPv6 link-local.
        (f"net/ipv6/conf/{ifname}/disable_ipv6", "1", False),
    ]


def workload_route(address: str, oif: int, *, proto: int = ROUTE_PROTO,
                   metric: int = WORKLOAD_ROUTE_METRIC) -> KernelRoute:
    """The host route to one workload address (``10.0.0.5`` or ``10.0.0.5/32``) through its veth.

    IPv4 is scope link; IPv6 has no route scopes (the kernel stores and dumps every IPv6 route as
    universe), so asking for link there would make every resync see a difference and rewrite it.
    """
    dst = canonical_dst(address)  # a bare address is its host prefix
    scope = SCOPE_UNIVERSE if ":" in dst else SCOPE_LINK
    return KernelRoute(dst=dst, proto=proto, metric=metric, scope=scope, oif=oif)
