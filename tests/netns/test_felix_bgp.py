"""Two agents with BGP (ExaBGP, node-to-node mesh) against a real etcd: blocks learned and routed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from l3net import netns
from l3net.constants import ROUTE_PROTO
from l3net.datastore import EtcdDatastore
from l3net.keys import KeyLayout
from l3net.lab.etcdserver import EtcdServer
from l3net.model.resource import Resource
from tests.netns.felix_rig import Node, Pinger, RouteMonitor, bgp_pair, routes
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]

P = ROUTE_PROTO


def test_two_nodes_exchange_blocks_over_bgp(netns_factory, etcd_server: EtcdServer, datastore: EtcdDatastore,
                                            key_layout: KeyLayout, tmp_path: Path) -> None:
    with bgp_pair(netns_factory, etcd_server, datastore, key_layout, tmp_path) as (n1, n2, w1):
        netns.run(w1, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.65.0.66"])
        # A workload address borrowed by n2 from n1's block is announced as a /32 and routed to n2.
        n2.add_workload("c", "10.65.0.9")
        wait_for(lambda: f"10.65.0.9 via 10.0.0.2 dev eth0 proto {P} metric 1024" in routes(n1.ns, P),
                 timeout=30, what="the borrowed /32 on n1")
        netns.run(w1, ["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.65.0.9"])
        # The status key and the metric follow the session on their own schedule: wait for each to show it.
        def status_has_peer() -> bool:
            kv = datastore.get(key_layout.node_status("n1", "bgp"))
            return kv is not None and b"Mesh_10_0_0_2" in kv.value
        wait_for(status_has_peer, timeout=30, what="BGP status key listing the mesh peer")
        wait_for(lambda: session_up(n1), timeout=30, what="l3net_bgp_session_up for the mesh peer")


def metric(node: Node, name: str, peer: str | None = None) -> float | None:
    """One sample of the agent's /metrics (the one with ``peer="<peer>"`` when given), or None."""
    for line in node.http(9091, "/metrics")[1].splitlines():
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] == name and (peer is None or f'peer="{peer}"' in head):
            return float(value)
    return None


def test_real_agents_announce_service_prefixes_and_route_none_of_them(
        netns_factory, etcd_server: EtcdServer, datastore: EtcdDatastore, key_layout: KeyLayout,
        tmp_path: Path) -> None:
    """Calico's service advertisement through the real agents: n1 hosts the Local Service's pod."""
    with bgp_pair(netns_factory, etcd_server, datastore, key_layout, tmp_path) as (n1, n2, _w1):
        # Both agents announce one block each; the learned totals before any Service.
        wait_for(lambda: metric(n2, "l3net_bgp_prefixes_received", "Mesh_10_0_0_1") == 1, 30, "n1's block only")
        conf = Resource("BGPConfiguration", "default", {"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}],
                                                        "serviceLoadBalancerIPs": [{"cidr": "198.51.100.0/24"}]})
        datastore.put(key_layout.resource("bgpconfigurations", "default"), conf.to_json())
        svc = Resource("Service", "web", {"clusterIP": "10.96.0.10", "loadBalancerIPs": ["198.51.100.5"],
                                          "externalTrafficPolicy": "Local", "selector": {"app": "web"}},
                       namespace="default")
        datastore.put(key_layout.resource("services", "web", "default"), svc.to_json())
        # The pod behind it: n1's workload gets the Service's label (as the kube-controller would write it).
        kv = datastore.get(n1.wep_key("a"))
        assert kv is not None
        doc = json.loads(kv.value)
        doc["metadata"]["labels"] = {"app": "web"}
        datastore.put(n1.wep_key("a"), json.dumps(doc).encode())
        # n1 sends block + 2 CIDRs + cluster IP /32 + LB /32; n2 (no endpoint) block + 2 CIDRs.
        wait_for(lambda: metric(n2, "l3net_bgp_prefixes_received", "Mesh_10_0_0_1") == 5, 40,
                 "n1's service prefixes received by n2")
        wait_for(lambda: metric(n1, "l3net_bgp_prefixes_received", "Mesh_10_0_0_2") == 3, 40,
                 "n2's service CIDRs received by n1")
        assert metric(n1, "l3net_bgp_advertisements") == 5 and metric(n2, "l3net_bgp_advertisements") == 3
        # No kernel route inside a service CIDR on either node: no blackhole, no learned route.
        for n in (n1, n2):
            bad = [r for r in routes(n.ns) if r.split()[0:2] == ["blackhole", "10.96.0.0/12"]
                   or r.split()[0] in ("10.96.0.0/12", "198.51.100.0/24", "10.96.0.10", "198.51.100.5")]
            assert bad == [], (n.name, bad)
        assert f"10.65.0.0/26 via 10.0.0.1 dev eth0 proto {P} metric 1024" in routes(n2.ns, P)
        # The Service goes: n1 withdraws its /32s, the CIDRs stay.
        datastore.delete(key_layout.resource("services", "web", "default"))
        wait_for(lambda: metric(n2, "l3net_bgp_prefixes_received", "Mesh_10_0_0_1") == 3, 40, "the /32s withdrawn")


def session_up(node: Node) -> bool:
    return 'l3net_bgp_session_up{peer="Mesh_10_0_0_2"} 1.0' in node.http(9091, "/metrics")[1]


def test_sigkill_restart_with_bgp_keeps_cross_node_traffic(netns_factory, etcd_server: EtcdServer,
                                                           datastore: EtcdDatastore, key_layout: KeyLayout,
                                                           tmp_path: Path) -> None:
    with bgp_pair(netns_factory, etcd_server, datastore, key_layout, tmp_path) as (n1, n2, w1):
        netns.run(w1, ["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.65.0.66"])
        before = routes(n1.ns)
        monitor = RouteMonitor(n1.ns, netns_factory)
        # n2 must keep n1's block through n1's restart too (graceful restart), or the replies are lost there
        monitor_n2 = RouteMonitor(n2.ns, netns_factory)
        ping = Pinger(w1, "10.65.0.66", netns_factory)
        time.sleep(0.5)
        n1.kill_agent()
        n1.start_agent()
        wait_for(n1.ready, timeout=30, what="n1 ready after restart")
        # Learned routes must not flap while the new agent's BGP session re-establishes and its routes are
        # relearned: watch until the session is up again (however long that takes here), then a little more
        # for the first apply of the relearned routes.
        wait_for(lambda: session_up(n1), timeout=60, what="n1's BGP session up again after restart")
        time.sleep(2.0)
        sent, received = ping.stop()
        events = monitor.stop()
        events_n2 = monitor_n2.stop()
        assert ping.rate >= 50, f"only {ping.rate:.0f} packets per second"
        flaps = [e for e in events if "10.65." in e]
        flaps_n2 = [e for e in events_n2 if "10.65." in e]
        assert received == sent, (f"lost {sent - received} of {sent} packets; route events on n1: {flaps}, "
                                  f"on n2: {flaps_n2}")
        assert flaps_n2 == []
        assert flaps == []
        assert routes(n1.ns) == before
