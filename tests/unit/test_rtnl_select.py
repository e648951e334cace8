"""l3net.rtnl.DstSelector: a dump keeps exactly the routes to the asked prefixes (and the defaults when asked),
deciding on the raw bytes before it decodes, and a byte hit that is not the destination is dropped."""

from __future__ import annotations

import socket
import struct

import pytest

from l3net.rtnl import NLMSG_DONE, REPLACE, DstSelector, KernelRoute, encode_route, parse_route_dump

pytestmark = pytest.mark.unit

SEQ = 7


def _dump(routes: list[KernelRoute]) -> bytes:
    """A dump answer as the kernel sends it: one RTM_NEWROUTE per route, then NLMSG_DONE."""
    done = struct.pack("=IHHII", 20, NLMSG_DONE, 0, SEQ, 0) + b"\0" * 4
    return b"".join(encode_route(REPLACE, r, SEQ) for r in routes) + done


TABLE = [
    KernelRoute("0.0.0.0/0", proto=3, metric=100, gateways=("192.0.2.1",)),
    KernelRoute("10.65.0.0/26", proto=76, metric=0, type=6),
    KernelRoute("10.65.0.5/32", proto=76, metric=1024, scope=253, oif=9),
    KernelRoute("10.65.0.5/32", proto=4, metric=10, scope=253, oif=3),      # a foreign route to the same /32
    KernelRoute("10.65.0.6/32", proto=76, metric=1024, scope=253, oif=10),
    # 10.65.0.5 in its bytes as a next hop, not as the destination: read, then dropped
    KernelRoute("198.51.100.9/32", proto=76, metric=0, gateways=("10.65.0.5",)),
    KernelRoute("10.65.0.0/24", proto=76, metric=0, gateways=("192.0.2.7",)),  # same bytes, shorter prefix
    KernelRoute("fd00::5/128", proto=76, metric=1024, scope=253, oif=9),
]


def test_only_the_routes_to_the_asked_prefixes_are_kept() -> None:
    routes, done, interrupted = parse_route_dump(_dump(TABLE), SEQ, DstSelector(["10.65.0.5/32"]))
    assert done and not interrupted
    assert routes == [TABLE[2], TABLE[3]]


def test_defaults_are_kept_when_asked() -> None:
    routes, _, _ = parse_route_dump(_dump(TABLE), SEQ, DstSelector(["10.65.0.6"], defaults=True))
    assert routes == [TABLE[0], TABLE[4]]


def test_an_ipv6_host_route_is_asked_by_its_own_family() -> None:
    select = DstSelector(["fd00::5"])
    routes, _, _ = parse_route_dump(_dump(TABLE), SEQ, select)
    assert routes == [TABLE[7]]
    assert select.families == (socket.AF_INET6,)
    assert DstSelector(["fd00::5"], defaults=True).families == (socket.AF_INET, socket.AF_INET6)


def test_without_a_selector_every_route_is_decoded() -> None:
    routes, _, _ = parse_route_dump(_dump(TABLE), SEQ)
    assert routes == TABLE


def test_a_bad_prefix_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="host bits"):
        DstSelector(["10.65.0.5/24"])
