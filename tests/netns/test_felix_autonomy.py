"""Issue 12, the agent's side: a hung etcd (SIGSTOP: TCP open, watch silent) is noticed within seconds and
makes /readiness fail while forwarding goes on; an agent SIGKILLed while etcd is hung restarts from the view
cached on disk and programs from it (a re-plugged workload gets its route back with etcd still down),
without one route change; everything resyncs when etcd answers again."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from l3net import netns
from l3net.constants import ROUTE_PROTO
from l3net.datastore import EtcdDatastore
from l3net.keys import KeyLayout
from l3net.lab.etcdserver import EtcdServer
from tests.netns.felix_rig import Node, Pinger, RouteMonitor, routes
from tests.route_monitor import forwarding_changes
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd, pytest.mark.slow]

P = ROUTE_PROTO
HUNG_SECONDS = 8.0
# Two probe misses (1 s interval, 1 s timeout) plus room for a loaded 2-core machine.
DETECT_WITHIN = 10.0


@pytest.fixture
def private_etcd(tmpfs_dir: Path):
    server = EtcdServer(tmpfs_dir / f"autonomy-{uuid.uuid4().hex[:6]}", name="autonomy")
    server.start()
    frozen: list[int] = []
    server.frozen = frozen  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        server.stop()


def freeze(server: EtcdServer) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    server.frozen.append(server.proc.pid)  # type: ignore[attr-defined]


def thaw(server: EtcdServer) -> None:
    while server.frozen:  # type: ignore[attr-defined]
        os.kill(server.frozen.pop(), signal.SIGCONT)  # type: ignore[attr-defined]


def readiness(node: Node) -> tuple[int, dict]:
    code, body = node.http(9099, "/readiness")
    return code, json.loads(body) if body.strip() else {}


def test_hung_etcd_is_noticed_and_a_killed_agent_restarts_from_its_cache(netns_factory, private_etcd: EtcdServer,
                                                                         key_layout: KeyLayout,
                                                                         tmp_path: Path) -> None:
    endpoint = f"unix://{private_etcd.socket_path}"
    ds = EtcdDatastore(endpoint)
    node = Node(netns_factory, ds, key_layout, endpoint, tmp_path)
    monitor = None
    try:
        wa = node.add_workload("a", "10.66.0.2")
        node.add_workload("b", "10.66.0.3")
        node.add_workload("c", "10.66.0.4")
        node.write_affinity("10.66.0.0/26")
        node.start_agent()
        wait_for(lambda: len(routes(node.ns, P)) == 4, what="routes")
        wait_for(node.ready, what="readiness")
        cache = tmp_path / node.name / "view-cache.json"
        wait_for(cache.exists, what="the view cache on disk")
        before = routes(node.ns)
        monitor = RouteMonitor(node.ns, netns_factory)
        ping = Pinger(wa, "10.66.0.3", netns_factory)
        time.sleep(1.0)

        # 1. Hung etcd: noticed by the probe, not by a connection error.
        freeze(private_etcd)
        t0 = time.monotonic()
        wait_for(lambda: readiness(node)[0] == 503, timeout=DETECT_WITHIN, what="readiness to fail", step=0.2)
        took = time.monotonic() - t0
        print(f"\nMEASURED hung etcd noticed by the agent after {took:.2f}s")
        code, body = readiness(node)
        assert code == 503
        assert "did not answer" in body["notReady"].get("datastore-probe", ""), body
        time.sleep(max(0.0, HUNG_SECONDS - (time.monotonic() - t0)))
        assert node.proc is not None and node.proc.poll() is None

        # 2. The agent dies while etcd is hung and comes back from its cache.
        node.kill_agent()
        node.start_agent()
        wait_for(lambda: "datastore-view" in readiness(node)[1].get("notReady", {}), timeout=30,
                 what="the restarted agent running from its cached view", step=0.2)
        assert "cached view" in readiness(node)[1]["notReady"]["datastore-view"]
        # It programs from that view: workload c is re-plugged (its route goes with its link) and gets its route back.
        netns.run(node.ns, ["ip", "link", "del", "calic"])
        node.add_workload("c", "10.66.0.4", write_wep=False)
        wait_for(lambda: f"10.66.0.4 dev calic proto {P} scope link metric 1024" in routes(node.ns, P), timeout=20,
                 what="the re-plugged workload's route, programmed from the cache with etcd hung", step=0.1)
        assert routes(node.ns) == before
        assert readiness(node)[0] == 503

        # 3. etcd answers again: ready, nothing moved.
        thaw(private_etcd)
        wait_for(node.ready, timeout=30, what="readiness after etcd's return")
        sent, received = ping.stop()
        print(f"\nMEASURED ping during hang + agent restart: {received}/{sent} at {ping.rate:.0f} pps")
        assert received == sent, f"lost {sent - received} of {sent} packets"
        assert routes(node.ns) == before
        # c's re-plug is the test's own change (with the kernel's own routes of its link).
        changes = [x for x in forwarding_changes(monitor.stop()) if "10.66.0.4" not in x and " dev calic " not in x]
        monitor = None
        assert changes == [], f"routes changed: {changes}"
        assert "Traceback" not in node.log()
    finally:
        if monitor is not None:
            monitor.stop()
        thaw(private_etcd)
        node.stop_agent()
        ds.close()
