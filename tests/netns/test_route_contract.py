"""The route fake's contract: the same scenarios against tests.fakes.netlink and the real kernel.

Each scenario drives felix's ``RouteNetlink`` seam (``write_batch``, ``dump_routes``, ``link_index``:
what :class:`felix.drivers.routes.RouteDriver` uses) and records what it can observe: each write's
outcome (an errno name or ``ok``) and the routes of the main table that the scenario is about.
Both worlds are checked against one expected record, written once, so the fake cannot drift from
the kernel without this test failing for one of them. The driver tests in tests/drivers trust
the fake; this is what earns that trust. The sysctl fake gets the same treatment at the end.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from felix.drivers.interfaces import ProcSysctls, Sysctls
from felix.drivers.routes import (
    CREATE,
    DELETE,
    REPLACE,
    RTN_BLACKHOLE,
    RTN_UNICAST,
    SCOPE_LINK,
    SCOPE_UNIVERSE,
    KernelRoute,
    PyrouteNetlink,
    RouteNetlink,
)
from l3net import netns
from l3net.constants import ROUTE_PROTO, WORKLOAD_ROUTE_METRIC
from tests.fakes.netlink import FakeNetlink
from tests.fakes.sysctls import FakeSysctls
from tests.netns_fixtures import NetnsFactory

pytestmark = pytest.mark.netns

METRIC = WORKLOAD_ROUTE_METRIC
FOREIGN_PROTO = 4  # "static": what an operator's `ip route add ... proto static` leaves
MISSING_IFINDEX = 999  # no link has it: a fresh namespace here holds five
# Node-side links: two workload veths and an uplink whose subnets make the test's next hops on-link.
LINKS = ("cali1", "cali2", "eth0")
UPLINK_ADDRS = ("10.0.0.1/24", "fd00::1/64")


@dataclass
class World:
    """One side of the contract: a route seam, its links by name, and a way to plant a foreign route."""

    nl: RouteNetlink
    plant_foreign: Callable[[KernelRoute], None]
    links: dict[str, int]

    def ifindex(self, name: str) -> int:
        idx = self.nl.link_index(name)
        assert idx is not None, f"link {name} missing from the world"
        return idx


def _fake_world() -> World:
    nl = FakeNetlink(links={name: 10 + i for i, name in enumerate(LINKS)}, connected=UPLINK_ADDRS)
    return World(nl=nl, plant_foreign=nl.add, links=dict(nl.links))


def _planter(ns: str) -> Callable[[KernelRoute], None]:
    """Plants a foreign route with ``ip route add``, as an operator would (gateway routes: all this test plants)."""
    def plant(r: KernelRoute) -> None:
        netns.run(ns, ["ip", "route", "add", r.dst, "via", r.gateways[0], "proto", str(r.proto),
                       "metric", str(r.metric)])
    return plant


@pytest.fixture(params=["fake", "kernel"])
def world(request: pytest.FixtureRequest, netns_factory: NetnsFactory) -> Iterator[World]:
    if request.param == "fake":
        yield _fake_world()
        return
    node, pod = netns_factory("cn"), netns_factory("cp")
    for i, name in enumerate(LINKS):
        netns_factory.veth(node, name, pod, f"p{i}")
    for addr in UPLINK_ADDRS:
        netns.run(node, ["ip", "addr", "add", addr, "dev", "eth0", "nodad"])
    nl = PyrouteNetlink(netns=node)
    try:
        links = {name: nl.link_index(name) or 0 for name in LINKS}
        yield World(nl=nl, plant_foreign=_planter(node), links=links)
    finally:
        nl.close()


# -- what a scenario observes ---------------------------------------------------
Row = tuple[str, int, int, str, str, str | None, tuple[str, ...]]
TYPES = {RTN_UNICAST: "unicast", RTN_BLACKHOLE: "blackhole"}
SCOPES = {SCOPE_UNIVERSE: "universe", SCOPE_LINK: "link"}


def observe(w: World, dsts: set[str], *, proto: int | None = None) -> set[Row]:
    """The routes of ``dsts`` (optionally only those of ``proto``) as rows naming links, not indexes.

    The output interface is part of the contract only for device routes: the kernel fills it in for a
    one-gateway route (and puts an IPv6 blackhole on ``lo``) where the fake keeps what was written,
    and the driver never compares it there (``RouteDriver._same`` with ``oif=None``).
    """
    names = {idx: name for name, idx in w.links.items()}
    rows = set()
    for r in w.nl.dump_routes():
        if r.dst not in dsts or (proto is not None and r.proto != proto):
            continue
        device_route = r.type == RTN_UNICAST and not r.gateways
        link = names.get(r.oif, f"index {r.oif}") if device_route and r.oif is not None else None
        rows.add((r.dst, r.proto, r.metric, TYPES.get(r.type, str(r.type)), SCOPES.get(r.scope, str(r.scope)), link,
                  r.gateways))
    return rows


def write(w: World, *ops: tuple[str, KernelRoute]) -> list[str]:
    """Each op's outcome: ``ok`` or the errno's name."""
    return ["ok" if e is None else errno.errorcode.get(e.errno or 0, str(e.errno)) for e in w.nl.write_batch(ops)]


def pod_route(w: World, dst: str, link: str) -> KernelRoute:
    return KernelRoute(dst=dst, proto=ROUTE_PROTO, metric=METRIC, scope=SCOPE_LINK, oif=w.ifindex(link))


def learned(dst: str, *gateways: str, proto: int = ROUTE_PROTO) -> KernelRoute:
    return KernelRoute(dst=dst, proto=proto, metric=METRIC, gateways=tuple(sorted(gateways)))


# -- the scenarios ----------------------------------------------------------------
POD4, POD6 = "10.65.0.2/32", "fd00:65::2/128"


def test_pod_route_add_then_create_again_is_eexist(world: World) -> None:
    r = pod_route(world, POD4, "cali1")
    assert write(world, (CREATE, r)) == ["ok"]
    assert observe(world, {POD4}) == {(POD4, ROUTE_PROTO, METRIC, "unicast", "link", "cali1", ())}
    assert write(world, (CREATE, r)) == ["EEXIST"]


def test_replace_moves_a_pod_route_to_another_veth_in_its_slot(world: World) -> None:
    assert write(world, (CREATE, pod_route(world, POD4, "cali1"))) == ["ok"]
    assert write(world, (REPLACE, pod_route(world, POD4, "cali2"))) == ["ok"]
    assert observe(world, {POD4}) == {(POD4, ROUTE_PROTO, METRIC, "unicast", "link", "cali2", ())}


def test_replace_changes_a_learned_routes_next_hop(world: World) -> None:
    dst = "10.65.1.0/26"
    assert write(world, (REPLACE, learned(dst, "10.0.0.2")), (REPLACE, learned(dst, "10.0.0.3"))) == ["ok", "ok"]
    assert observe(world, {dst}) == {(dst, ROUTE_PROTO, METRIC, "unicast", "universe", None, ("10.0.0.3",))}


@pytest.mark.parametrize("dst,hops", [("10.65.2.0/26", ("10.0.0.4", "10.0.0.3")),
                                      ("fd00:65:2::/64", ("fd00::4", "fd00::3"))])
def test_ecmp_route_keeps_every_next_hop(world: World, dst: str, hops: tuple[str, str]) -> None:
    assert write(world, (REPLACE, learned(dst, *hops))) == ["ok"]
    assert observe(world, {dst}) == {(dst, ROUTE_PROTO, METRIC, "unicast", "universe", None, tuple(sorted(hops)))}
    # Down to one next hop: the same slot, replaced.
    assert write(world, (REPLACE, learned(dst, hops[0]))) == ["ok"]
    assert observe(world, {dst}) == {(dst, ROUTE_PROTO, METRIC, "unicast", "universe", None, (hops[0],))}


def test_delete_removes_our_route_and_a_second_delete_is_esrch(world: World) -> None:
    r = pod_route(world, POD4, "cali1")
    assert write(world, (CREATE, r), (DELETE, r), (DELETE, r)) == ["ok", "ok", "ESRCH"]
    assert observe(world, {POD4}) == set()


def test_listing_by_our_protocol_leaves_a_foreign_route_alone(world: World) -> None:
    foreign = learned("10.77.0.0/26", "10.0.0.9", proto=FOREIGN_PROTO)
    world.plant_foreign(foreign)
    ours = learned("10.77.0.0/26", "10.0.0.5")
    # Its slot is taken: create-exclusive is refused, and a delete naming our protocol matches nothing.
    assert write(world, (CREATE, ours), (DELETE, ours)) == ["EEXIST", "ESRCH"]
    assert write(world, (CREATE, pod_route(world, POD4, "cali1")), (REPLACE, learned("10.65.1.0/26", "10.0.0.2"))) \
        == ["ok", "ok"]
    dsts = {"10.77.0.0/26", POD4, "10.65.1.0/26"}
    assert observe(world, dsts, proto=ROUTE_PROTO) == {
        (POD4, ROUTE_PROTO, METRIC, "unicast", "link", "cali1", ()),
        ("10.65.1.0/26", ROUTE_PROTO, METRIC, "unicast", "universe", None, ("10.0.0.2",)),
    }
    assert observe(world, {"10.77.0.0/26"}) == {
        ("10.77.0.0/26", FOREIGN_PROTO, METRIC, "unicast", "universe", None, ("10.0.0.9",))}


def test_a_missing_device_is_enodev_and_the_rest_of_the_batch_applies(world: World) -> None:
    gone = KernelRoute(dst="10.65.0.9/32", proto=ROUTE_PROTO, metric=METRIC, scope=SCOPE_LINK, oif=MISSING_IFINDEX)
    assert world.nl.link_index("nosuchlink") is None
    assert write(world, (CREATE, pod_route(world, POD4, "cali1")), (REPLACE, gone),
                 (REPLACE, learned("10.65.1.0/26", "10.0.0.2"))) == ["ok", "ENODEV", "ok"]
    assert observe(world, {POD4, "10.65.0.9/32", "10.65.1.0/26"}) == {
        (POD4, ROUTE_PROTO, METRIC, "unicast", "link", "cali1", ()),
        ("10.65.1.0/26", ROUTE_PROTO, METRIC, "unicast", "universe", None, ("10.0.0.2",)),
    }


@pytest.mark.parametrize("dst,hops,refused", [("10.65.3.0/26", ("192.0.2.1",), "ENETUNREACH"),
                                              ("10.65.3.0/26", ("10.0.0.3", "192.0.2.1"), "ENETUNREACH"),
                                              ("fd00:65:3::/64", ("fd01::1",), "EHOSTUNREACH"),
                                              ("fd00:65:3::/64", ("fd00::3", "fd01::1"), "EHOSTUNREACH")])
def test_a_next_hop_on_no_link_is_refused_whole(world: World, dst: str, hops: tuple[str, ...], refused: str) -> None:
    # What felix quarantines as a refusal (REFUSAL_ERRNOS): one hop off-link refuses the whole ECMP route.
    assert write(world, (REPLACE, learned(dst, *hops))) == [refused]
    assert observe(world, {dst}) == set()


def test_blackhole_and_ipv6_pod_route(world: World) -> None:
    hole = KernelRoute(dst="10.65.0.0/26", proto=ROUTE_PROTO, metric=METRIC, type=RTN_BLACKHOLE)
    assert write(world, (REPLACE, hole), (CREATE, pod_route(world, POD6, "cali1"))) == ["ok", "ok"]
    assert observe(world, {"10.65.0.0/26", POD6}) == {
        ("10.65.0.0/26", ROUTE_PROTO, METRIC, "blackhole", "universe", None, ()),
        # Written with scope link, like every pod route; IPv6 has no scopes and keeps universe.
        (POD6, ROUTE_PROTO, METRIC, "unicast", "universe", "cali1", ()),
    }


# -- sysctls ------------------------------------------------------------------------
class NetnsSysctls:
    """felix's ProcSysctls, each call made from inside ``ns`` (it reads this thread's namespace)."""

    def __init__(self, ns: str) -> None:
        self.ns, self.proc = ns, ProcSysctls()

    def read(self, path: str) -> str | None:
        with netns.in_netns(self.ns):
            return self.proc.read(path)

    def write(self, path: str, value: str) -> None:
        with netns.in_netns(self.ns):
            self.proc.write(path, value)


@pytest.fixture(params=["fake", "kernel"])
def sysctls(request: pytest.FixtureRequest, netns_factory: NetnsFactory) -> Sysctls:
    if request.param == "fake":
        fake = FakeSysctls()
        fake.add_iface("cali1")
        return fake
    node, pod = netns_factory("sn"), netns_factory("sp")
    netns_factory.veth(node, "cali1", pod, "eth0")
    return NetnsSysctls(node)


def test_sysctls_defaults_writes_and_missing_interfaces(sysctls: Sysctls) -> None:
    paths = ["net/ipv4/ip_forward", "net/ipv4/conf/cali1/proxy_arp", "net/ipv4/neigh/cali1/proxy_delay",
             "net/ipv6/conf/cali1/accept_ra", "net/ipv6/conf/cali1/disable_ipv6"]
    assert [sysctls.read(p) for p in paths] == ["0", "0", "80", "1", "0"]
    sysctls.write("net/ipv4/conf/cali1/proxy_arp", "1")
    assert sysctls.read("net/ipv4/conf/cali1/proxy_arp") == "1"
    assert sysctls.read("net/ipv4/conf/cali9/proxy_arp") is None
    with pytest.raises(FileNotFoundError):
        sysctls.write("net/ipv4/conf/cali9/proxy_arp", "1")
