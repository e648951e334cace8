"""Two real agents (ExaBGP mesh) with BFD switched on in the datastore: sessions come up, status and metrics
show them, and cutting n2's cable makes n1's agent drop n2's block long before the BGP hold timer."""

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
from l3net.model.client import ResourceClient
from l3net.model.resource import Resource
from tests.netns.felix_rig import bgp_pair, routes
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]

P = ROUTE_PROTO
N2_BLOCK = f"10.65.0.64/26 via 10.0.0.2 dev eth0 proto {P} metric 1024"
HOLD_S = 90  # the agents' BGP hold time (Calico's default): what the cut would cost without BFD


def test_agents_run_bfd_from_the_datastore_and_drop_a_cut_nodes_block(
        netns_factory, etcd_server: EtcdServer, datastore: EtcdDatastore, key_layout: KeyLayout, tmp_path: Path,
        record_property) -> None:
    with bgp_pair(netns_factory, etcd_server, datastore, key_layout, tmp_path) as (n1, _n2, _w1):
        ResourceClient(datastore, key_layout).apply([Resource("BGPConfiguration", "default", {
            "bfd": {"enabled": True, "minRxInterval": "300ms", "minTxInterval": "300ms"}})])

        def bfd_state(node: str) -> str | None:
            kv = datastore.get(key_layout.node_status(node, "bfd"))
            if kv is None:
                return None
            sessions = json.loads(kv.value)["sessions"]
            return sessions[0]["state"] if sessions else None
        wait_for(lambda: bfd_state("n1") == "up" and bfd_state("n2") == "up", timeout=40,
                 what="BFD Up in both agents' status keys")
        metric = 'l3net_bfd_session_state{node="n1",peer="10.0.0.2",state="up"} 1.0'
        wait_for(lambda: metric in n1.http(9091, "/metrics")[1], timeout=20, what="the BFD state metric")
        assert N2_BLOCK in routes(n1.ns, P)
        time.sleep(1.5)  # past the poll sequence: 300 ms both ways

        t0 = time.monotonic()
        netns.run(n1.router, ["ip", "link", "set", "pn2", "down"])  # n2's cable, at the switch
        wait_for(lambda: N2_BLOCK not in routes(n1.ns, P), timeout=HOLD_S / 3, what="n2's block gone on n1",
                 step=0.02)
        elapsed = time.monotonic() - t0
        record_property("bfd_agent_cut_block_gone", round(elapsed, 3))
        print(f"\nMEASURED bfd_agent_cut_block_gone: {elapsed * 1000:.0f} ms")
        wait_for(lambda: bfd_state("n1") == "down", timeout=20, what="n1's status key showing BFD down")
        assert 'l3net_bfd_down_events_total{diag="detection_time_expired",node="n1",peer="10.0.0.2"} 1.0' in \
            n1.http(9091, "/metrics")[1]

        netns.run(n1.router, ["ip", "link", "set", "pn2", "up"])
        wait_for(lambda: N2_BLOCK in routes(n1.ns, P), timeout=60, what="n2's block back on n1 with BGP")
        wait_for(lambda: bfd_state("n1") == "up", timeout=20, what="BFD Up again")
