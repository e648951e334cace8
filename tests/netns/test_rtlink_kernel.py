"""l3net.rtlink against the real kernel: a veth made with its peer in another namespace, set up, addressed and
routed, then removed; what the kernel answers for what is not there."""

from __future__ import annotations

import errno
import json

import pytest

from l3net import netns
from l3net.constants import ROUTE_PROTO
from l3net.rtlink import LinkSocket
from l3net.rtnl import CREATE, SCOPE_LINK, KernelRoute
from tests.netns_fixtures import NetnsFactory

pytestmark = pytest.mark.netns


def ip_json(ns: str, *args: str) -> list[dict]:
    return json.loads(netns.run(ns, ["ip", "-j", *args]).stdout or "[]")


def test_a_veth_pair_is_made_set_addressed_routed_and_removed_as_the_kernel_reports_it(
        netns_factory: NetnsFactory) -> None:
    host, pod = netns_factory("h"), netns_factory("p")
    with netns.in_netns(host):
        links = LinkSocket()
    with netns.in_netns(pod):
        pod_links = LinkSocket()
    with links, pod_links:
        assert links.link(name="calitest0") is None
        links.add_veth("calitest0", "ee:ee:ee:ee:ee:ee", 1400, "eth0", netns.netns_path(pod))
        made = links.link(name="calitest0")
        assert made is not None and (made.mac, made.mtu, made.up) == ("ee:ee:ee:ee:ee:ee", 1400, False)
        assert links.link(index=made.index) == made
        with pytest.raises(OSError) as exists:
            links.add_veth("calitest0", "ee:ee:ee:ee:ee:ee", 1400, "eth1", netns.netns_path(pod))
        assert exists.value.errno == errno.EEXIST
        links.set_link(made.index, mac="ee:ee:ee:ee:ee:ee", up=True)
        assert links.link(name="calitest0").up   # type: ignore[union-attr]

        end = pod_links.link(name="eth0")
        assert end is not None and end.mtu == 1400 and end.mac != "ee:ee:ee:ee:ee:ee"
        pod_links.set_link(end.index, up=True)
        pod_links.add_address(end.index, "10.65.0.7", 32)
        pod_links.write_route(CREATE, KernelRoute(dst="169.254.1.1/32", proto=ROUTE_PROTO, metric=0,
                                                  scope=SCOPE_LINK, oif=end.index))
        pod_links.write_route(CREATE, KernelRoute(dst="0.0.0.0/0", proto=ROUTE_PROTO, metric=0, oif=end.index,
                                                  gateways=("169.254.1.1",)))
        with pytest.raises(OSError) as again:
            pod_links.add_address(end.index, "10.65.0.7", 32)
        assert again.value.errno == errno.EEXIST
        addrs = [(a["local"], a["prefixlen"]) for i in ip_json(pod, "addr", "show", "dev", "eth0")
                 for a in i["addr_info"] if a["family"] == "inet"]
        assert addrs == [("10.65.0.7", 32)]
        # listed by our protocol: both routes carry it
        routes = {(r["dst"], r.get("gateway"), r.get("scope"), r.get("dev"))
                  for r in ip_json(pod, "route", "show", "proto", str(ROUTE_PROTO))}
        assert routes == {("169.254.1.1", None, "link", "eth0"), ("default", "169.254.1.1", None, "eth0")}

        links.delete_link(made.index)
        assert links.link(name="calitest0") is None and pod_links.link(name="eth0") is None
        with pytest.raises(OSError) as gone:
            links.delete_link(made.index)
        assert gone.value.errno == errno.ENODEV
