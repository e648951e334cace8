"""Datastore outage: etcd stopped while traffic flows; the dataplane stays exactly as it is."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from l3net.constants import ROUTE_PROTO
from l3net.datastore import EtcdDatastore
from l3net.keys import KeyLayout
from l3net.lab.etcdserver import EtcdServer
from tests.netns.felix_rig import Node, Pinger, routes
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd, pytest.mark.slow]

OUTAGE_SECONDS = 30.0
# The bound: a workload added during the outage is programmed this soon after etcd is back.
PROGRAMMED_AFTER_RETURN_SECONDS = 2.0
P = ROUTE_PROTO


@pytest.fixture
def private_etcd(tmpfs_dir: Path):
    server = EtcdServer(tmpfs_dir / f"outage-{uuid.uuid4().hex[:6]}", name="outage")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_etcd_outage_keeps_traffic_and_resyncs_on_return(netns_factory, private_etcd: EtcdServer,
                                                         key_layout: KeyLayout, tmp_path: Path) -> None:
    ds = EtcdDatastore(f"unix://{private_etcd.socket_path}")
    node = Node(netns_factory, ds, key_layout, f"unix://{private_etcd.socket_path}", tmp_path)
    try:
        wa = node.add_workload("a", "10.65.0.2")
        node.add_workload("b", "10.65.0.3")
        node.write_affinity("10.65.0.0/26")
        node.start_agent()
        wait_for(lambda: len(routes(node.ns, P)) == 3, what="routes")
        wait_for(node.ready, what="readiness")
        before = routes(node.ns)
        ping = Pinger(wa, "10.65.0.3", netns_factory)
        time.sleep(1.0)

        private_etcd.pause()
        outage_end = time.monotonic() + OUTAGE_SECONDS
        wait_for(lambda: not node.ready(), what="readiness to report the outage")
        code, body = node.http(9099, "/readiness")
        assert code == 503 and "datastore" in json.loads(body)["notReady"]
        time.sleep(OUTAGE_SECONDS / 2)
        # A workload is plugged in during the outage; its endpoint can only be written once etcd is back.
        wc = node.add_workload("c", "10.65.0.4", write_wep=False)
        time.sleep(max(0.0, outage_end - time.monotonic()))
        assert routes(node.ns) == before  # the dataplane did not move during the outage
        assert node.proc is not None and node.proc.poll() is None

        private_etcd.start()
        back = time.monotonic()
        node.write_wep("c", "10.65.0.4")
        wait_for(lambda: f"10.65.0.4 dev calic proto {P} scope link metric 1024" in routes(node.ns, P),
                 timeout=10, what="the outage workload's route", step=0.02)
        took = time.monotonic() - back
        sent, received = ping.stop()
        assert ping.rate >= 50, f"only {ping.rate:.0f} packets per second"
        assert received == sent, f"lost {sent - received} of {sent} packets"
        assert took <= PROGRAMMED_AFTER_RETURN_SECONDS, f"programmed {took:.2f}s after etcd came back"
        wait_for(node.ready, what="readiness after the outage")
        # The new workload really works.
        from l3net import netns
        netns.run(wc, ["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.65.0.2"])
        assert routes(node.ns) == before | {f"10.65.0.4 dev calic proto {P} scope link metric 1024"}
    finally:
        node.stop_agent()
        ds.close()
