"""The route and interface drivers against a real kernel, inside a throwaway namespace."""

from __future__ import annotations

import threading
import time

import pytest

from felix.calc import Link
from felix.desired import InterfaceSpec, RouteSpec
from felix.drivers.interfaces import InterfaceDriver, LinkWatcher
from felix.drivers.routes import PyrouteNetlink, RouteDriver
from l3net import netns
from l3net.constants import ROUTE_PROTO

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
        deadline = time.monotonic() + 5
        while "cali3" in seen[-1] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "cali3" not in seen[-1]
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
