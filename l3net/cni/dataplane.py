"""l3net.cni.dataplane: wire one workload the way Calico does, and take it apart again.

Host side ``cali<hash>`` with MAC ee:ee:ee:ee:ee:ee, the sysctls and the /32 route
per address that :mod:`l3net.workload_kernel` defines (felix keeps the same ones, so
the two writers share one kernel slot and never disagree); pod side
``CNI_IFNAME`` with the /32, a scope-link route to 169.254.1.1 and the default
route via it. Runs in the namespace the plugin was started in (the node's);
the pod's namespace is reached through its path. Raises DataplaneError (with
the reason) on conflicts; callers roll back with :func:`teardown`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from l3net import netns as l3netns
from l3net.constants import (
    MAIN_TABLE,
    ROUTE_PROTO,
    WORKLOAD_GATEWAY_V4,
    WORKLOAD_HOST_MAC,
)
from l3net.rtlink import LinkSocket
from l3net.rtnl import (
    CREATE,
    DELETE,
    REPLACE,
    RTN_UNICAST,
    SCOPE_LINK,
    DstSelector,
    KernelRoute,
    PyrouteNetlink,
    canonical_dst,
)
from l3net.workload_kernel import NODE_SYSCTLS, interface_sysctls, workload_route

_log = logging.getLogger(__name__)

DEFAULT_MTU = 1500
RT_SCOPE_LINK = 253


class DataplaneError(Exception):
    """The workload could not be wired (or CHECK found drift); the message says what."""


def uplink_mtu(links: LinkSocket, routes: list[KernelRoute], route_oif: Callable[[str], int | None]) -> int:
    """MTU of the interface carrying the IPv4 default route (the uplink); 1500 when there is none.

    ``routes`` is a dump of the main table's default routes (``PyrouteNetlink.dump_routes_to``): pyroute2's
    own default-route lookup decodes the whole table with its message classes, ~45 ms per ADD on a node
    holding 1,000 routes. ``route_oif(address)``: the interface the kernel routes ``address`` through, for a
    multipath default (rare), which names no interface of its own.
    """
    defaults = sorted((r for r in routes if r.dst == "0.0.0.0/0" and r.type == RTN_UNICAST), key=lambda r: r.metric)
    for route in defaults:
        oif = route.oif
        if oif is None and route.gateways:  # multipath: the interface of the first next hop
            oif = route_oif(route.gateways[0])
        link = links.link(index=oif) if oif else None
        if link is not None and link.mtu:
            return link.mtu
    _log.warning("no IPv4 default route; using MTU %d", DEFAULT_MTU)
    return DEFAULT_MTU


def _route_oif(nl: PyrouteNetlink, address: str) -> int | None:
    """The kernel's output interface for ``address`` (a FIB lookup, through pyroute2: rare, not worth a codec)."""
    found = nl.ipr.route("get", dst=address)
    return found[0].get_attr("RTA_OIF") if found else None


def routes_to(nl: PyrouteNetlink, ips: list[str], *, defaults: bool = False) -> list[KernelRoute]:
    """The main table's host routes (/32, /128) to ``ips``, and its default routes when asked, on the raw codec.

    Only those are decoded: a whole-table dump decoded in Python grew an ADD by ~7 ms on a node of 500 pods.
    """
    return nl.dump_routes_to(DstSelector(ips, defaults=defaults))


def host_routes(routes: list[KernelRoute], ip: str) -> list[KernelRoute]:
    """The host routes (/32, /128) to ``ip`` in ``routes``, whatever their protocol, type or interface."""
    dst = canonical_dst(ip)
    return [r for r in routes if r.dst == dst]


@contextlib.contextmanager
def pod_netlink(netns_path: str) -> Iterator[IPRoute]:
    """A pyroute2 socket in the pod's namespace, made by switching this thread only (``l3net.netns.in_netns``).

    Not ``IPRoute(netns=...)``: pyroute2 forks a child for that, and a fork of the agent (which serves
    CNI requests) inherits its asyncio signal wake-up fd, so the SIGTERM pyroute2 sends its child is
    read by the agent's loop as its own and stops the agent. Opening the path never creates a
    namespace (pyroute2's default would); a missing path is FileNotFoundError. CHECK reads through it;
    ADD and DEL use :func:`pod_links`.
    """
    with l3netns.in_netns(netns_path), IPRoute() as ipr:
        yield ipr


@contextlib.contextmanager
def pod_links(netns_path: str) -> Iterator[LinkSocket]:
    """A raw rtnetlink socket (``l3net.rtlink``) in the pod's namespace, opened from this thread switched
    into it; the socket stays there once the thread switches back."""
    with l3netns.in_netns(netns_path):
        sock = LinkSocket()
    with sock:
        yield sock


def _link_index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _write_sysctls(host_if: str) -> None:
    """The sysctls felix keeps (l3net.workload_kernel), written now so the pod works before the agent sees it."""
    for path, value in NODE_SYSCTLS:
        l3netns.write_sysctl(path, value)
    for path, value, required in interface_sysctls(host_if):
        if required or os.path.exists(f"/proc/sys/{path}"):
            l3netns.write_sysctl(path, value)


def write_host_routes(nl: PyrouteNetlink, idx: int, host_if: str, ips: list[str]) -> None:
    """The pod's host /32s, as felix's route driver writes them (same builder, same codec): one kernel slot."""
    outcomes = nl.write_batch([(REPLACE, workload_route(ip, idx)) for ip in ips])
    failed = [f"{ip}: {err.strerror or err}" for ip, err in zip(ips, outcomes, strict=True) if err is not None]
    if failed:
        raise DataplaneError(f"host routes via {host_if}: " + "; ".join(failed))


def _delete_our_routes(ips: list[str], oifs: tuple[int | None, ...]) -> bool:
    """Delete our /32s (protocol ROUTE_PROTO) for ``ips`` whose interface is one of ``oifs``; True if any went."""
    if not ips:
        return False
    with PyrouteNetlink() as nl:   # raw route socket only (no link lookup: pyroute2 is not opened)
        doomed = [r for r in routes_to(nl, ips) if r.proto == ROUTE_PROTO and r.oif in oifs]
        outcomes = nl.write_batch([(DELETE, r) for r in doomed])  # an error here: raced with another DEL
    return any(err is None for err in outcomes)


@dataclass(frozen=True)
class Wired:
    host_if: str
    pod_if: str
    pod_mac: str
    mtu: int


def setup(host_if: str, netns_path: str, pod_if: str, ips: list[str], mtu: int = 0) -> Wired:
    """Create and configure the veth pair and routes. Replaces a stale host veth of the same name."""
    # Host side: one raw socket for links (l3net.rtlink) and one for routes (l3net.rtnl); no pyroute2 on this
    # path: its ~15 requests per pod cost ~8 ms of Python under the agent's GIL.
    with PyrouteNetlink() as nl, LinkSocket() as links:
        stale = links.link(name=host_if)
        if stale is not None:
            _log.info("removing stale host veth ifname=%s", host_if)
            links.delete_link(stale.index)
        routes = routes_to(nl, ips, defaults=not mtu)
        for ip in ips:
            for r in host_routes(routes, ip):
                if r.oif is not None:
                    holder = links.link(index=r.oif)
                    raise DataplaneError(f"route {r.dst} already points to interface "
                                         f"{holder.name if holder else r.oif}; refusing to take it over for {host_if}")
        link_mtu = mtu or uplink_mtu(links, routes, lambda address: _route_oif(nl, address))
        try:
            links.add_veth(host_if, WORKLOAD_HOST_MAC, link_mtu, pod_if, netns_path)
        except OSError as exc:
            raise DataplaneError(f"creating veth {host_if} <-> {pod_if} in {netns_path}: {exc}") from exc
        made = links.link(name=host_if)
        if made is None:
            raise DataplaneError(f"veth {host_if} vanished right after creation")
        _write_sysctls(host_if)
        # The MAC again, as Calico does (some kernels ignore the address given at creation), in the same
        # request that brings the link up.
        links.set_link(made.index, mac=WORKLOAD_HOST_MAC, up=True)
        pod_mac = _wire_pod_side(netns_path, pod_if, ips)
        write_host_routes(nl, made.index, host_if, ips)
    _log.info("wired workload host_if=%s pod_if=%s ips=%s mtu=%d", host_if, pod_if, ",".join(ips), link_mtu)
    return Wired(host_if=host_if, pod_if=pod_if, pod_mac=pod_mac, mtu=link_mtu)


def _wire_pod_side(netns_path: str, pod_if: str, ips: list[str]) -> str:
    """Bring the pod's end up with its addresses and its two routes; its MAC."""
    with pod_links(netns_path) as pod:
        link = pod.link(name=pod_if)   # its index and its MAC in one request
        if link is None:
            raise DataplaneError(f"{pod_if} did not appear in {netns_path}")
        pod.set_link(link.index, up=True)
        for ip in ips:
            pod.add_address(link.index, ip, 32)
        pod.write_route(CREATE, KernelRoute(dst=f"{WORKLOAD_GATEWAY_V4}/32", proto=ROUTE_PROTO, metric=0,
                                            scope=SCOPE_LINK, oif=link.index))
        pod.write_route(CREATE, KernelRoute(dst="0.0.0.0/0", proto=ROUTE_PROTO, metric=0, oif=link.index,
                                            gateways=(WORKLOAD_GATEWAY_V4,)))
        return str(link.mac)


def teardown(host_if: str, ips: list[str] | None = None) -> bool:
    """Remove the host veth (its peer and routes go with it) and any /32 of ours left for ``ips``.

    Idempotent: True when something was removed.
    """
    removed = False
    with LinkSocket() as links:
        link = links.link(name=host_if)
        idx = link.index if link is not None else None
        if idx is not None:
            with contextlib.suppress(OSError):  # raced with another DEL: already gone
                links.delete_link(idx)
                removed = True
    removed = _delete_our_routes(ips or [], (None, idx)) or removed
    if removed:
        _log.info("removed workload wiring host_if=%s", host_if)
    return removed


def teardown_in_container(netns_path: str, pod_if: str, ips: list[str] | None = None) -> bool:
    """Remove the pair from the container's side: delete ``pod_if`` inside ``netns_path``.

    The host peer and its /32 routes go with it, whatever the host veth is called
    now: a newer container of the same pod has a host veth of the very same name,
    and deleting by that name (the old way) could take the newer pod's wiring.
    A namespace that is gone took the pair with it (nothing to do). Afterwards only
    our /32s for ``ips`` that point at no interface are removed; one that points at
    a live interface belongs to whoever wired it since. Idempotent: True when
    something was removed.
    """
    removed = False
    if netns_path and os.path.exists(netns_path):
        try:
            with pod_links(netns_path) as pod:
                link = pod.link(name=pod_if)
                if link is not None:
                    with contextlib.suppress(OSError):  # raced with another DEL: already gone
                        pod.delete_link(link.index)
                        removed = True
        except OSError as exc:
            # A namespace file whose namespace is gone (unmounted bind) cannot be entered: the pair died with it.
            _log.info("DEL: cannot enter %s (%s); the pair went with the namespace", netns_path, exc)
    removed = _delete_our_routes(ips or [], (None,)) or removed
    if removed:
        _log.info("removed workload wiring from the container side netns=%s ifname=%s", netns_path, pod_if)
    return removed


def check(host_if: str, netns_path: str, pod_if: str, ips: list[str]) -> list[str]:
    """Every difference between the kernel and the wiring ``setup`` makes (empty = fine)."""
    drift: list[str] = []
    with PyrouteNetlink() as nl:
        ipr = nl.ipr
        idx = _link_index(ipr, host_if)
        if idx is None:
            return [f"host veth {host_if} is missing"]
        link = ipr.link("get", index=idx)[0]
        if link.get_attr("IFLA_ADDRESS") != WORKLOAD_HOST_MAC:
            drift.append(f"{host_if} has MAC {link.get_attr('IFLA_ADDRESS')}, want {WORKLOAD_HOST_MAC}")
        if link.get_attr("IFLA_OPERSTATE") not in ("UP", "UNKNOWN") and not (link.get("flags", 0) & 1):
            drift.append(f"{host_if} is down")
        if l3netns.read_sysctl(f"net/ipv4/conf/{host_if}/proxy_arp") != "1":
            drift.append(f"{host_if} proxy_arp is not 1")
        routes = routes_to(nl, ips)
        for ip in ips:
            if not any(r.oif == idx and r.proto == ROUTE_PROTO for r in host_routes(routes, ip)):
                drift.append(f"host route {canonical_dst(ip)} dev {host_if} proto {ROUTE_PROTO} is missing")
    try:
        with pod_netlink(netns_path) as pod:
            pidx = _link_index(pod, pod_if)
            if pidx is None:
                return [*drift, f"{pod_if} is missing in {netns_path}"]
            have = {(a.get_attr("IFA_ADDRESS"), a.get("prefixlen"))
                    for a in pod.addr("dump", index=pidx, family=socket.AF_INET)}
            for ip in ips:
                if (ip, 32) not in have:
                    drift.append(f"{pod_if} lacks {ip}/32")
            routes = pod.route("dump", family=socket.AF_INET, table=MAIN_TABLE)
            if not any(r.get("dst_len") == 32 and r.get_attr("RTA_DST") == WORKLOAD_GATEWAY_V4 and
                       r.get_attr("RTA_OIF") == pidx and r.get("scope") == RT_SCOPE_LINK for r in routes):
                drift.append(f"pod route {WORKLOAD_GATEWAY_V4}/32 scope link dev {pod_if} is missing")
            if not any(r.get("dst_len") == 0 and r.get_attr("RTA_GATEWAY") == WORKLOAD_GATEWAY_V4 for r in routes):
                drift.append(f"pod default route via {WORKLOAD_GATEWAY_V4} is missing")
    except (OSError, NetlinkError) as exc:
        drift.append(f"cannot enter {netns_path}: {exc}")
    return drift
