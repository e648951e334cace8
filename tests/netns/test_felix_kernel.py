"""The route and interface drivers against a real kernel, inside a throwaway namespace."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading

import pytest

from felix.desired import InterfaceSpec, RouteSpec
from felix.drivers.interfaces import InterfaceDriver, LinkWatcher
from felix.drivers.routes import (
    DELETE,
    REPLACE,
    KernelRoute,
    NetnsGuardError,
    PyrouteNetlink,
    RouteDriver,
)
from felix.links import Link
from l3net import netns
from l3net import rtnl as routes_mod
from l3net.constants import ROUTE_PROTO
from tests.waiting import wait_for

pytestmark = pytest.mark.netns


def ip_routes(ns: str) -> set[str]:
    out = netns.run(ns, ["ip", "-4", "route", "show", "table", "main"]).stdout
    joined = out.replace("\n\t", " ").replace("\n ", " ")  # multipath next hops continue on tab lines
    return {" ".join(line.split()) for line in joined.splitlines() if line.strip()}


@pytest.fixture
def node(netns_factory) -> str:
    ns = netns_factory("rt")
    peer = netns_factory("rp")
    netns_factory.veth(ns, "eth0", peer, "eth0")
    netns.run(ns, ["ip", "addr", "add", "10.0.0.1/24", "dev", "eth0"])
    for i in (1, 2):
        netns.run(ns, ["ip", "link", "add", f"cali{i}", "type", "veth", "peer", "name", f"wl{i}"])
        netns.run(ns, ["ip", "link", "set", f"cali{i}", "up"])
        netns.run(ns, ["ip", "link", "set", f"wl{i}", "up"])
    # Foreign routes: a CNI-style /32, a default route and a route at our metric with another proto.
    netns.run(ns, ["ip", "route", "add", "default", "via", "10.0.0.254"])
    netns.run(ns, ["ip", "route", "add", "10.65.0.2/32", "dev", "cali1", "scope", "link", "proto", "boot"])
    netns.run(ns, ["ip", "route", "add", "10.77.0.0/26", "via", "10.0.0.9", "proto", "12", "metric", "1024"])
    return ns


DESIRED = [
    RouteSpec("10.65.0.2/32", "workload", ifname="cali1"),
    RouteSpec("10.65.0.3/32", "workload", ifname="cali2"),
    RouteSpec("10.65.0.0/26", "blackhole"),
    RouteSpec("10.65.1.0/26", "learned", next_hops=("10.0.0.2",)),
    RouteSpec("10.65.2.0/26", "learned", next_hops=("10.0.0.3", "10.0.0.4")),
    RouteSpec("10.77.0.0/26", "learned", next_hops=("10.0.0.5",)),  # held by a foreign route: conflict
]


def test_real_kernel_converge_adopt_heal_and_clean_up(node: str) -> None:
    foreign = ip_routes(node)
    nl = PyrouteNetlink(netns=node)
    try:
        drv = RouteDriver(nl)
        drv.resync()
        res = drv.apply(DESIRED)
        assert res.writes == 5 and res.conflicts == ["10.77.0.0/26"]
        ours = {r for r in ip_routes(node) if f"proto {ROUTE_PROTO}" in r}
        assert ours == {
            "10.65.0.0/26 proto 76 metric 1024 blackhole".replace("10.65.0.0/26 proto 76 metric 1024 blackhole",
                                                                   "blackhole 10.65.0.0/26 proto 76 metric 1024"),
            "10.65.0.2 dev cali1 proto 76 scope link metric 1024",
            "10.65.0.3 dev cali2 proto 76 scope link metric 1024",
            "10.65.1.0/26 via 10.0.0.2 dev eth0 proto 76 metric 1024",
            "10.65.2.0/26 proto 76 metric 1024 nexthop via 10.0.0.3 dev eth0 weight 1 nexthop via 10.0.0.4 "
            "dev eth0 weight 1",
        }
        assert foreign <= ip_routes(node)
        assert drv.apply(DESIRED).writes == 0
        # A second driver on the same kernel (a restarted agent) adopts everything: zero writes.
        nl2 = PyrouteNetlink(netns=node)
        try:
            drv2 = RouteDriver(nl2)
            drv2.resync()
            assert drv2.apply(DESIRED).writes == 0
        finally:
            nl2.close()
        # Clobbered behind our back: healed on the next refresh.
        netns.run(node, ["ip", "route", "del", "10.65.0.3/32", "proto", str(ROUTE_PROTO)])
        netns.run(node, ["ip", "route", "replace", "10.65.1.0/26", "via", "10.0.0.7", "proto", str(ROUTE_PROTO),
                         "metric", "1024"])
        drv.invalidate("test")
        assert drv.apply(DESIRED).writes == 2
        assert "10.65.1.0/26 via 10.0.0.2 dev eth0 proto 76 metric 1024" in ip_routes(node)
        # Everything removed: exactly the foreign routes remain.
        drv.apply([])
        assert ip_routes(node) == foreign
    finally:
        nl.close()


def test_foreign_route_planted_after_resync_is_a_conflict_not_overwritten(node: str) -> None:
    nl = PyrouteNetlink(netns=node)
    try:
        drv = RouteDriver(nl)
        drv.resync()
        # Planted after the re-read, in the slot (dst, metric) of a desired learned route and of a desired /32.
        netns.run(node, ["ip", "route", "add", "10.65.1.0/26", "via", "10.0.0.8", "proto", "12", "metric", "1024"])
        netns.run(node, ["ip", "route", "add", "10.65.0.3/32", "dev", "cali1", "proto", "12", "metric", "1024"])
        planted = {r for r in ip_routes(node) if r.startswith(("10.65.1.0/26", "10.65.0.3 "))}
        assert len(planted) == 2
        res = drv.apply(DESIRED)
        assert res.conflicts == ["10.65.0.3/32", "10.65.1.0/26", "10.77.0.0/26"] and res.writes == 3
        assert planted <= ip_routes(node)  # the foreign routes are exactly as they were
        assert not any(r.startswith(("10.65.1.0/26", "10.65.0.3 ")) and f"proto {ROUTE_PROTO}" in r
                       for r in ip_routes(node))
        again = drv.apply(DESIRED)
        assert again.writes == 0 and again.conflicts == res.conflicts
    finally:
        nl.close()


def test_link_watcher_reports_links_and_sysctls_are_set(node: str) -> None:
    seen: list[dict[str, Link]] = []
    got = threading.Event()

    def cb(links: dict[str, Link]) -> None:
        seen.append(links)
        if "cali3" in links and links["cali3"].up:
            got.set()

    watcher = LinkWatcher(cb, netns=node)
    initial = watcher.start()
    try:
        assert {"lo", "eth0", "cali1", "cali2"} <= set(initial)
        assert initial["cali1"].up
        netns.run(node, ["ip", "link", "add", "cali3", "type", "veth", "peer", "name", "wl3"])
        netns.run(node, ["ip", "link", "set", "cali3", "up"])
        assert got.wait(5)
        netns.run(node, ["ip", "link", "del", "cali3"])
        wait_for(lambda: "cali3" not in seen[-1], 5, "a snapshot without the deleted cali3", step=0.02)
    finally:
        watcher.stop()

    class NsSysctls:
        def read(self, path: str) -> str | None:
            try:
                return netns.read_sysctl(path, node)
            except FileNotFoundError:
                return None

        def write(self, path: str, value: str) -> None:
            netns.write_sysctl(path, value, node)

    drv = InterfaceDriver(NsSysctls())
    drv.apply([InterfaceSpec("cali1")], initial)
    assert netns.read_sysctl("net/ipv4/conf/cali1/proxy_arp", node) == "1"
    assert netns.read_sysctl("net/ipv4/neigh/cali1/proxy_delay", node) == "0"
    assert netns.read_sysctl("net/ipv4/ip_forward", node) == "1"
    assert netns.read_sysctl("net/ipv4/conf/cali2/proxy_arp", node) == "0"


# -- bulk writes, the wire format against the kernel, the namespace guard ------------


def _pyroute2_view(ns: str) -> set[KernelRoute]:
    """The main table decoded by pyroute2 (an independent decoder) in our comparable form."""
    from pyroute2 import IPRoute

    out = set()
    with IPRoute(netns=ns, flags=0) as ipr:
        for family in (2, 10):
            for m in ipr.route("dump", family=family, table=254):
                dst = m.get_attr("RTA_DST") or ("0.0.0.0" if family == 2 else "::")
                gws = [m.get_attr("RTA_GATEWAY")] if m.get_attr("RTA_GATEWAY") else []
                hops = m.get_attr("RTA_MULTIPATH") or []
                gws += [h.get_attr("RTA_GATEWAY") for h in hops if h.get_attr("RTA_GATEWAY")]
                out.add(KernelRoute(str(ipaddress.ip_network(f"{dst}/{m['dst_len']}")), m["proto"],
                                    m.get_attr("RTA_PRIORITY") or 0, m["type"], m["scope"], m.get_attr("RTA_OIF"),
                                    tuple(sorted(gws)), m.get_attr("RTA_TABLE") or m["table"]))
    return out


@pytest.fixture
def node6(node: str) -> str:
    netns.run(node, ["ip", "addr", "add", "fd00::1/64", "dev", "eth0", "nodad"])
    return node


def test_bulk_install_adopt_and_withdraw_with_ecmp_and_ipv6(node6: str) -> None:
    foreign = _pyroute2_view(node6)
    specs = [RouteSpec(f"10.{128 + i // 16384}.{i // 64 % 256}.{i % 64 * 4}/30", "learned", next_hops=("10.0.0.2",))
             for i in range(2500)]
    specs += [RouteSpec(f"10.100.{i}.0/24", "learned", next_hops=("10.0.0.3", "10.0.0.4")) for i in range(200)]
    specs += [RouteSpec(f"fd10:{i:x}::/64", "learned", next_hops=("fd00::2",)) for i in range(200)]
    specs += [RouteSpec(f"fd11:{i:x}::/64", "learned", next_hops=("fd00::2", "fd00::3")) for i in range(100)]
    specs += [RouteSpec("10.65.0.0/26", "blackhole"), RouteSpec("10.65.0.2/32", "workload", ifname="cali1")]
    nl = PyrouteNetlink(netns=node6)
    try:
        nl.MAX_SEND = 16 * 1024  # many sends per batch, so chunking is exercised too
        drv = RouteDriver(nl, batch_size=700)
        drv.resync()
        assert drv.apply(specs).writes == len(specs)
        kernel = _pyroute2_view(node6)
        ours = {r for r in kernel if r.proto == ROUTE_PROTO}
        assert len(ours) == len(specs)
        cached = drv.programmed  # as written: the kernel adds the output interface it chose
        assert {r.slot for r in ours} == set(cached)
        assert all(RouteDriver._same(r, cached[r.slot]) for r in ours)
        assert kernel - ours == foreign
        # our struct decoder and pyroute2's see the same table
        assert set(nl.dump_routes()) == kernel
        assert drv.apply(specs).writes == 0
        fresh = RouteDriver(nl)  # a restarted agent adopts all of it
        fresh.resync()
        assert fresh.apply(specs).writes == 0
        # ECMP next hops change and half the prefixes are withdrawn
        changed = [RouteSpec(s.dst, s.kind, s.ifname, s.ifindex, ("10.0.0.4", "10.0.0.5"))
                   if s.dst.startswith("10.100.") else s for s in specs[1000:]]
        assert fresh.apply(changed).writes == 1000 + 200
        assert {r.gateways for r in _pyroute2_view(node6) if r.dst.startswith("10.100.")} == {("10.0.0.4", "10.0.0.5")}
        fresh.apply([])
        assert _pyroute2_view(node6) == foreign
    finally:
        nl.close()


def test_kernel_refusals_map_back_to_their_routes(node: str) -> None:
    before = ip_routes(node)
    nl = PyrouteNetlink(netns=node)
    try:
        nl.MAX_SEND = 2048
        good = [RouteSpec(f"10.90.{i}.0/24", "learned", next_hops=("10.0.0.2",)) for i in range(120)]
        bad_gw = RouteSpec("10.91.0.0/24", "learned", next_hops=("10.200.0.1",))  # not on any link
        bad_if = RouteSpec("10.91.1.0/32", "workload", ifindex=999)
        drv = RouteDriver(nl)
        drv.resync()
        res = drv.apply([*good[:60], bad_gw, *good[60:], bad_if])  # refusals: not an exception
        refused = {r.route.dst: r.errno for r in res.refused}
        assert refused == {"10.91.0.0/24": errno.ENETUNREACH, "10.91.1.0/32": errno.ENODEV}
        assert "invalid gateway" in res.refused[0].reason  # the kernel's own words (extended ack)
        ours = {r.dst for r in nl.dump_routes() if r.proto == ROUTE_PROTO}
        assert ours == {s.dst for s in good} and res.writes == len(good)
        assert drv.apply([*good, bad_gw, bad_if]).writes == 0  # refused routes wait for a reason to retry
        # The next hop's subnet appears on a link: after the retry the route goes in.
        netns.run(node, ["ip", "addr", "add", "10.200.0.2/24", "dev", "eth0"])
        drv.retry_refused("addresses changed")
        res = drv.apply([*good, bad_gw])
        assert res.writes == 1 and res.refused == []
        assert "10.91.0.0/24 via 10.200.0.1 dev eth0 proto 76 metric 1024" in ip_routes(node)
        drv.apply([])
        netns.run(node, ["ip", "addr", "del", "10.200.0.2/24", "dev", "eth0"])
        assert ip_routes(node) == before
    finally:
        nl.close()


def test_dump_filtered_by_interface_and_cni_route_adoption(node: str) -> None:
    nl = PyrouteNetlink(netns=node)
    try:
        drv = RouteDriver(nl)
        drv.resync()
        drv.apply(DESIRED[1:])
        cali1 = nl.link_index("cali1")
        assert cali1 is not None
        # The CNI plugin's /32 for a new pod on cali1, written with the agent's metric.
        netns.run(node, ["ip", "route", "replace", "10.65.0.9/32", "dev", "cali1", "scope", "link", "proto",
                         str(ROUTE_PROTO), "metric", "1024"])
        via = nl.dump_routes(oif=cali1)
        assert {(r.dst, r.proto) for r in via if "." in r.dst} == {("10.65.0.2/32", 3), ("10.65.0.9/32", ROUTE_PROTO)}
        assert all(r.oif == cali1 for r in via)
        assert nl.dump_routes(oif=4242) == []  # no such interface: no routes, no error
        drv.reread_interfaces([cali1])
        res = drv.apply([*DESIRED[1:], RouteSpec("10.65.0.9/32", "workload", ifname="cali1")])
        assert res.writes == 0
        assert [r for r in ip_routes(node) if r.startswith("10.65.0.9")] == [
            "10.65.0.9 dev cali1 proto 76 scope link metric 1024"]
        drv.apply([])
    finally:
        nl.close()


def test_lost_outcomes_count_as_failures(node: str) -> None:
    nl = PyrouteNetlink(netns=node)
    try:
        assert nl._wsock is not None
        # A tiny receive buffer: the kernel drops most of 400 error answers (ENOBUFS).
        nl._wsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        ghosts = [(DELETE, KernelRoute(f"10.92.{i // 250}.{i % 250}/32", ROUTE_PROTO, 1024)) for i in range(400)]
        outcomes = nl.write_batch(ghosts)
        assert all(isinstance(e, OSError) for e in outcomes)  # none may be mistaken for a success
        assert any(e is not None and e.errno == errno.ENOBUFS for e in outcomes)
        nl._wsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        route = KernelRoute("10.93.0.0/24", ROUTE_PROTO, 1024, gateways=("10.0.0.2",))
        assert nl.write_batch([(REPLACE, route)]) == [None]  # the socket is usable again
        assert any(r.slot == route.slot and r.gateways == route.gateways for r in nl.dump_routes())
    finally:
        nl.close()


def test_guard_refuses_a_socket_in_another_namespace(node: str, netns_factory, monkeypatch) -> None:
    import pyroute2

    other = netns_factory("ro")
    other_before = netns.run(other, ["ip", "route", "show", "table", "main"]).stdout
    node_before = ip_routes(node)
    # A missing namespace is never created.
    with pytest.raises(NetnsGuardError, match="does not exist"):
        PyrouteNetlink(netns=node + "-missing")
    assert not os.path.exists(netns.netns_path(node + "-missing"))
    # The writer socket ends up elsewhere: no read, no write.
    nl = PyrouteNetlink(netns=node)
    try:
        assert nl._wsock is not None
        nl._wsock.close()
        nl._wsock = routes_mod._open_route_socket_in(netns.netns_path(other))
        route = KernelRoute("10.94.0.0/24", ROUTE_PROTO, 1024, type=routes_mod.RTN_BLACKHOLE)
        with pytest.raises(NetnsGuardError, match="writer"):
            nl.write_batch([(REPLACE, route)])
        with pytest.raises(NetnsGuardError):
            RouteDriver(nl).apply([RouteSpec("10.94.0.0/24", "blackhole")])
    finally:
        nl.close()
    # pyroute2's socket ends up elsewhere (its forked helper failed): refused when it is opened (on the first
    # link lookup), and every read or write after that refuses too.
    real = pyroute2.IPRoute
    monkeypatch.setattr(pyroute2, "IPRoute", lambda **kw: real(netns=other, flags=0))
    nl = PyrouteNetlink(netns=node)
    try:
        with pytest.raises(NetnsGuardError, match="pyroute2"):
            nl.link_index("lo")
        with pytest.raises(NetnsGuardError, match="pyroute2"):
            nl.write_batch([(REPLACE, route)])
    finally:
        nl.close()
    assert netns.run(other, ["ip", "route", "show", "table", "main"]).stdout == other_before
    assert ip_routes(node) == node_before
