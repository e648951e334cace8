"""A learned route the kernel refuses never takes the agent down: real etcd, real kernel routes in a netns.

The sync loop runs in process with the agent's own parts (Syncer on a real etcd,
RouteDriver over PyrouteNetlink in a node namespace); a BGP-learned prefix whose
next hop is on no link of the node is fed through ``on_learned_routes``, exactly
where the BGP speaker feeds it. Sysctls are faked: interfaces are not under test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno

import pytest

from felix.calc import Model
from felix.dataplane import Dataplane
from felix.drivers.interfaces import InterfaceDriver
from felix.drivers.routes import PyrouteNetlink, RouteDriver
from felix.links import Link
from felix.loop import LoopConfig, SyncLoop, ThreadSafeSink
from l3net import metrics, netns
from l3net.constants import ROUTE_PROTO
from l3net.datastore import EtcdDatastore
from l3net.keys import KeyLayout
from l3net.model.resource import Resource
from l3net.model.validation import workload_endpoint_name
from l3net.syncer import Syncer
from tests.fakes.sysctls import FakeSysctls
from tests.netns.felix_rig import routes

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]

P = ROUTE_PROTO


def test_unreachable_learned_next_hop_is_refused_logged_and_the_loop_stays_ready(
        netns_factory, datastore: EtcdDatastore, key_layout: KeyLayout) -> None:
    ns = netns_factory("rf")
    peer = netns_factory("rq")
    netns_factory.veth(ns, "eth0", peer, "eth0")
    netns.run(ns, ["ip", "addr", "add", "10.0.0.1/24", "dev", "eth0"])
    netns.run(ns, ["ip", "link", "add", "cali1", "type", "veth", "peer", "name", "wl1"])
    netns.run(ns, ["ip", "link", "set", "cali1", "up"])
    netns.run(ns, ["ip", "link", "set", "wl1", "up"])
    name = workload_endpoint_name("n1", "a", "eth0")
    wep = Resource(kind="WorkloadEndpoint", name=name, namespace="default",
                   spec={"node": "n1", "orchestrator": "k8s", "workload": "", "pod": "a", "endpoint": "eth0",
                         "ipNetworks": ["10.65.0.2/32"], "interfaceName": "cali1"})
    datastore.put(key_layout.resource("workloadendpoints", name, "default"), wep.to_json())
    datastore.put(key_layout.resource("ippools", "p1"),
                  Resource(kind="IPPool", name="p1", spec={"cidr": "10.65.0.0/16"}).to_json())
    datastore.put(key_layout.affinity("n1", "10.65.0.0/26"), b'{"state": "confirmed"}')

    nl = PyrouteNetlink(netns=ns)
    io = concurrent.futures.ThreadPoolExecutor(1)
    cfg = LoopConfig(min_interval=0.01, startup_sweep_delay=0, max_failures=2, refresh_interval=3600)
    sync = SyncLoop(Model(key_layout), "n1", Dataplane(RouteDriver(nl), InterfaceDriver(FakeSysctls())),
                    config=cfg, io_executor=io)
    idx = nl.link_index("cali1")
    assert idx is not None
    links = {"eth0": Link("eth0", nl.link_index("eth0") or 0, True), "cali1": Link("cali1", idx, True)}
    failures_before = metrics.REGISTRY.get_sample_value("l3net_route_write_failures_total",
                                                        {"errno": "ENETUNREACH"}) or 0.0
    good = f"10.65.1.0/26 via 10.0.0.2 dev eth0 proto {P} metric 1024"
    refused = "10.99.0.0/24"
    want = {good, f"10.65.0.2 dev cali1 proto {P} scope link metric 1024",
            f"blackhole 10.65.0.0/26 proto {P} metric 1024"}

    async def wait(cond, what: str, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
        deadline = asyncio.get_running_loop().time() + timeout
        while not cond():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        syncer = Syncer(datastore, key_layout.prefix, ThreadSafeSink(sync, loop))
        sync.on_links(links)
        task = asyncio.create_task(sync.run())
        syncer.start()
        try:
            # A peer announces two prefixes; one's next hop (192.0.2.1) is on no link of this node.
            sync.on_learned_routes({"10.65.1.0/26": ["10.0.0.2"], refused: ["192.0.2.1"]})
            await wait(lambda: routes(ns, P) == want, "every route but the refused one")
            await wait(lambda: "routesRefused" in sync.health.warnings(), "the readiness warning")
            # Many more applies than max_failures: each one still skips the refused route, none fails.
            for i in range(3 * cfg.max_failures):
                sync.on_learned_routes({"10.65.1.0/26": ["10.0.0.2"], refused: ["192.0.2.1"],
                                        f"10.66.{i}.0/24": ["10.0.0.3"]})
                await wait(lambda i=i: any(r.startswith(f"10.66.{i}.0/24 ") for r in routes(ns, P)), "a new prefix")
            assert not task.done() and sync.failures == 0
            ready, reasons = sync.health.readiness()
            assert ready, reasons
            assert f"{refused} via 192.0.2.1" in sync.health.warnings()["routesRefused"]
            assert metrics.REGISTRY.get_sample_value("l3net_routes_refused") == 1
            assert metrics.REGISTRY.get_sample_value("l3net_route_write_failures_total",
                                                     {"errno": "ENETUNREACH"}) == failures_before + 1
            assert [r.errno for r in sync.dataplane.routes.refused] == [errno.ENETUNREACH]
            # The next hop's subnet comes up on a new link: the link change retries, the route goes in.
            netns.run(ns, ["ip", "link", "add", "dummy9", "type", "veth", "peer", "name", "dummy9p"])
            netns.run(ns, ["ip", "addr", "add", "192.0.2.2/24", "dev", "dummy9"])
            netns.run(ns, ["ip", "link", "set", "dummy9p", "up"])
            netns.run(ns, ["ip", "link", "set", "dummy9", "up"])
            now = await loop.run_in_executor(io, nl.refresh_links)  # pyroute2's sync API off the event loop
            sync.on_links({**links, "dummy9": Link("dummy9", now["dummy9"], True)})
            await wait(lambda: any(r.startswith(f"{refused} via 192.0.2.1 dev dummy9 proto {P}")
                                   for r in routes(ns, P)), "the once refused route")
            await wait(lambda: "routesRefused" not in sync.health.warnings(), "the warning cleared")
            assert metrics.REGISTRY.get_sample_value("l3net_routes_refused") == 0
        finally:
            sync.stop()
            await task
            await loop.run_in_executor(None, syncer.stop)

    try:
        asyncio.run(scenario())
        # Removing everything leaves only the foreign routes.
        sync.dataplane.routes.apply([])
        assert routes(ns, P) == set()
    finally:
        io.shutdown()
        nl.close()
