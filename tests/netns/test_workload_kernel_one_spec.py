"""The CNI plugin and felix write a pod's host side from one specification (l3net.workload_kernel).

Calico's CNI plugin wires the host route and sysctls at ADD, and Felix keeps them afterwards; in l3net
both build them with the same functions and write routes with the same codec (l3net.rtnl). Shown in a
real namespace, both ways round: after the plugin's dataplane wired a pod, felix's drivers find
nothing to write; after felix wrote them, a second ADD's writes leave the same single route.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from felix.desired import InterfaceSpec, RouteSpec
from felix.drivers.interfaces import InterfaceDriver, ProcSysctls
from felix.drivers.routes import PyrouteNetlink, RouteDriver
from felix.links import Link
from l3net import netns
from l3net.cni import dataplane
from l3net.constants import ROUTE_PROTO
from l3net.workload_kernel import NODE_SYSCTLS, interface_sysctls, workload_route
from tests.netns_fixtures import NetnsFactory

pytestmark = pytest.mark.netns

HOST_IF = "caliw1"
POD_IP = "10.71.3.4"


@pytest.fixture
def wired(netns_factory: NetnsFactory) -> Iterator[tuple[str, str]]:
    """A node namespace and a pod namespace, the pod wired by the CNI plugin's dataplane."""
    node, pod = netns_factory("wn"), netns_factory("wp")
    with netns.in_netns(node):
        dataplane.setup(HOST_IF, netns.netns_path(pod), "eth0", [POD_IP], mtu=1500)
    yield node, pod


def _our_routes_to(node: str, ip: str) -> list[tuple[str, int, int, int | None]]:
    with PyrouteNetlink(netns=node) as nl:
        return [(r.dst, r.metric, r.scope, r.oif) for r in nl.dump_routes() if r.dst == f"{ip}/32"]


def test_after_the_plugin_wired_a_pod_felix_finds_nothing_to_write(wired: tuple[str, str]) -> None:
    node, _pod = wired
    with PyrouteNetlink(netns=node) as nl:
        idx = nl.link_index(HOST_IF)
        assert idx is not None
        driver = RouteDriver(nl)
        driver.resync()
        result = driver.apply([RouteSpec(dst=f"{POD_IP}/32", kind="workload", ifname=HOST_IF)])
        assert result.writes == 0 and not result.conflicts and not result.refused
        assert driver.programmed[(f"{POD_IP}/32", workload_route(POD_IP, idx).metric)] == workload_route(POD_IP, idx)
    with netns.in_netns(node):
        # Every sysctl the spec names is already as felix wants it: its driver writes none.
        assert InterfaceDriver(ProcSysctls()).apply([InterfaceSpec(HOST_IF)], {HOST_IF: Link(HOST_IF, idx, True)}) == 0
        sysctls = ProcSysctls()
        for path, value in NODE_SYSCTLS:
            assert sysctls.read(path) == value, path
        for path, value, required in interface_sysctls(HOST_IF):
            assert sysctls.read(path) == value or (not required and sysctls.read(path) is None), path


def test_felix_and_the_plugin_share_one_kernel_slot_whichever_writes_last(wired: tuple[str, str]) -> None:
    node, _pod = wired
    with netns.in_netns(node):
        idx = socket.if_nametoindex(HOST_IF)
    want = workload_route(POD_IP, idx)
    assert _our_routes_to(node, POD_IP) == [(want.dst, want.metric, want.scope, idx)]
    # felix rewrites the route through its driver (as after a cache invalidation)...
    with PyrouteNetlink(netns=node) as nl:
        assert nl.write_batch([("replace", want)]) == [None]
    # ... and the plugin wires the same pod again (a runtime's retried ADD): still one route, same attributes.
    with netns.in_netns(node), PyrouteNetlink() as nl:
        dataplane.write_host_routes(nl, idx, HOST_IF, [POD_IP])
    assert _our_routes_to(node, POD_IP) == [(want.dst, want.metric, want.scope, idx)]
    with PyrouteNetlink(netns=node) as nl:
        (route,) = [r for r in nl.dump_routes() if r.dst == want.dst]
    assert route.proto == ROUTE_PROTO and route == want


def test_teardown_removes_the_route_through_the_same_codec(wired: tuple[str, str]) -> None:
    node, _pod = wired
    with netns.in_netns(node):
        assert dataplane.teardown(HOST_IF, [POD_IP]) is True
        assert dataplane.teardown(HOST_IF, [POD_IP]) is False  # idempotent
    assert _our_routes_to(node, POD_IP) == []
