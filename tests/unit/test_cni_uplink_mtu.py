"""l3net.cni.dataplane's route reads from one raw dump: the uplink's MTU and the host routes to an address."""

from __future__ import annotations

import pytest

from l3net.cni.dataplane import host_routes, uplink_mtu
from l3net.rtlink import Link
from l3net.rtnl import RTN_BLACKHOLE, KernelRoute

pytestmark = pytest.mark.unit


class _FakeLinks:
    """Links with MTUs: enough of l3net.rtlink.LinkSocket for uplink_mtu."""

    def __init__(self, mtus: dict[int, int]) -> None:
        self.mtus = mtus

    def link(self, *, index: int) -> Link | None:
        mtu = self.mtus.get(index)
        return None if mtu is None else Link(index=index, name=f"if{index}", mac=None, mtu=mtu, up=True)


def test_uplink_mtu_is_the_lowest_metric_default_routes_interface() -> None:
    routes = [KernelRoute("10.0.0.0/24", proto=2, metric=0, oif=3),
              KernelRoute("0.0.0.0/0", proto=3, metric=200, oif=3),
              KernelRoute("0.0.0.0/0", proto=3, metric=100, oif=2)]
    assert uplink_mtu(_FakeLinks({2: 9000, 3: 1400}), routes, {}.get) == 9000  # type: ignore[arg-type]


def test_uplink_mtu_of_a_multipath_default_is_its_first_next_hops_interface() -> None:
    routes = [KernelRoute("0.0.0.0/0", proto=3, metric=0, gateways=("192.0.2.1", "192.0.2.9"))]
    via = {"192.0.2.1": 4, "192.0.2.9": 5}   # the kernel's answer per next hop
    assert uplink_mtu(_FakeLinks({4: 1450, 5: 9000}), routes, via.get) == 1450  # type: ignore[arg-type]


def test_uplink_mtu_without_a_unicast_default_is_1500() -> None:
    routes = [KernelRoute("0.0.0.0/0", proto=3, metric=0, type=RTN_BLACKHOLE),
              KernelRoute("::/0", proto=3, metric=0, oif=2)]
    assert uplink_mtu(_FakeLinks({2: 9000}), routes, {}.get) == 1500  # type: ignore[arg-type]


def test_host_routes_match_the_address_in_either_notation_and_family() -> None:
    mine = KernelRoute("10.1.0.5/32", proto=80, metric=1024, oif=7)
    v6 = KernelRoute("fd00::5/128", proto=80, metric=1024, oif=7)
    routes = [mine, KernelRoute("10.1.0.0/26", proto=80, metric=0, type=RTN_BLACKHOLE), v6]
    assert host_routes(routes, "10.1.0.5") == [mine] == host_routes(routes, "10.1.0.5/32")
    assert host_routes(routes, "fd00:0::5") == [v6]
    assert host_routes(routes, "10.1.0.6") == []
