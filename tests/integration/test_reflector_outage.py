"""Issues 12 and 16: two ``l3net route-reflector`` loops, on either engine (ExaBGP in l3net's process, or
BIRD configured by it), ride out a hung etcd (SIGSTOP) and a killed one, and a reflector restarted while
etcd is down reflects again from its on-disk cache.

Real etcd (a private one: the test stops it), real ExaBGP for the reflectors and the three clients,
real kernel routes (the fabric's installer) and real pings between the clients' pod addresses.
The short drill for the normal suite; the minutes-long version is tests/e2e/test_outage_drill.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from bgp.cli import run_reflector
from l3net.datastore import EtcdDatastore
from l3net.health import HealthState
from l3net.keys import KeyLayout
from l3net.lab.etcdserver import EtcdServer
from l3net.model.resource import Resource
from tests.integration.bgp_fabric import (
    ADDR,
    BASE_CFG,
    NODES,
    Fabric,
    Nodes,
    block,
    fabric,
    node_res,
    pod_ip,
)
from tests.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.needs_root]

__all__ = ["fabric"]

HUNG_SECONDS = 8.0
DOWN_SECONDS = 8.0
# The probe's bound (2 misses of 1 s interval + 1 s timeout) plus room for a loaded 2-core machine.
DETECT_WITHIN = 10.0


def resources() -> list[Resource]:
    return [node_res(n) for n in NODES] + [
        node_res("rr1", routeReflectorClusterID="1.1.1.1"), node_res("rr2", routeReflectorClusterID="1.1.1.1"),
        Resource("BGPConfiguration", "default", {**BASE_CFG, "nodeToNodeMeshEnabled": False}),
        Resource("BGPPeer", "to-rr", {"nodeSelector": "!has(rr)", "peerSelector": "has(rr)"}),
        Resource("BGPPeer", "rr-mesh", {"nodeSelector": "has(rr)", "peerSelector": "has(rr)"}),
    ]


@pytest.mark.parametrize("engine", ["exabgp", "bird"])
def test_reflectors_survive_hung_and_killed_etcd_and_restart_from_cache(fabric: Fabric, tmp_path: Path,
                                                                        tmpfs_dir: Path, engine: str) -> None:
    server = EtcdServer(tmpfs_dir / f"rr-outage-{uuid.uuid4().hex[:6]}", name="rroutage")
    server.start()
    ds = EtcdDatastore(f"unix://{server.socket_path}")
    keys = KeyLayout(prefix=f"/rr-outage-{uuid.uuid4().hex[:6]}/")
    res = resources()
    for r in res:
        ds.put(keys.resource(r.info.plural, r.name), r.to_json())
    by_kind = {k: [r for r in res if r.kind == k] for k in ("Node", "BGPConfiguration", "BGPPeer")}
    frozen: list[int] = []

    def freeze() -> None:
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        frozen.append(server.proc.pid)

    def thaw() -> None:
        while frozen:
            os.kill(frozen.pop(), signal.SIGCONT)

    async def scenario() -> None:
        stops = {rr: asyncio.Event() for rr in ("rr1", "rr2")}
        health = {rr: HealthState() for rr in ("rr1", "rr2")}

        def start_rr(rr: str) -> asyncio.Task[int]:
            return asyncio.create_task(run_reflector(ds, keys, rr, tmp_path / rr, resync=0.5, netns=fabric.ns[rr],
                                                     stop=stops[rr], health=health[rr],
                                                     cache_dir=tmp_path / f"{rr}-cache", engine=engine))
        tasks = {rr: start_rr(rr) for rr in ("rr1", "rr2")}
        ns = Nodes(fabric, tmp_path)
        ping = None
        try:
            await ns.start(NODES, by_kind["Node"], by_kind["BGPConfiguration"], by_kind["BGPPeer"])
            await wait_for_async(ns.learned_everything, 30, "routes reflected in every kernel")

            def ready(rr: str) -> bool:
                return health[rr].readiness()[0]
            await wait_for_async(lambda: ready("rr1") and ready("rr2"), 15, "both reflectors ready")
            await wait_for_async(lambda: all((tmp_path / f"{rr}-cache" / "view-cache-nodes.json").exists()
                                       for rr in ("rr1", "rr2")), 10, "the view caches written")
            routes_before = {n: fabric.kernel_routes(n) for n in NODES}
            ping = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", fabric.ns["n1"], "ping", "-n", "-q", "-i", "0.01", "-I", pod_ip("n1"),
                pod_ip("n3"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)

            # 1. etcd hung: TCP open, nothing answers.
            freeze()
            t0 = time.monotonic()
            took = await wait_for_async(lambda: not ready("rr1") and not ready("rr2"), DETECT_WITHIN,
                                  "readiness to report the hung datastore")
            print(f"\nMEASURED hung etcd noticed by both reflectors after {took:.2f}s")
            assert "datastore-probe" in health["rr1"].readiness()[1]
            await asyncio.sleep(max(0.0, HUNG_SECONDS - (time.monotonic() - t0)))
            assert not any(t.done() for t in tasks.values()), "a reflector exited during the hang"
            assert {n: fabric.kernel_routes(n) for n in NODES} == routes_before
            thaw()
            await wait_for_async(lambda: ready("rr1") and ready("rr2"), 20, "readiness after the hang")

            # 2. etcd killed; rr1 is restarted meanwhile and must start from its cache.
            server.pause()
            t0 = time.monotonic()
            await wait_for_async(lambda: not ready("rr1") and not ready("rr2"), DETECT_WITHIN, "readiness: etcd down")
            stops["rr1"].set()
            assert await tasks["rr1"] == 0, "a stop during the outage is a clean exit"
            stops["rr1"] = asyncio.Event()
            health["rr1"] = HealthState()
            tasks["rr1"] = start_rr("rr1")

            def rr1_reflects() -> bool:
                return all(ADDR["rr1"] in [p.peer for p in ns.sp[n].rib.candidates(block("n2"))]
                           for n in ("n1", "n3"))
            await wait_for_async(rr1_reflects, 30, "the restarted rr1 reflecting again from its cache")
            reasons = health["rr1"].readiness()[1]
            assert "cached view" in reasons.get("datastore", ""), reasons
            await asyncio.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - t0)))
            assert not any(t.done() for t in tasks.values()), "a reflector exited while etcd was down"
            server.start()
            await wait_for_async(lambda: ready("rr1") and ready("rr2"), 20, "readiness after etcd's return")
            assert {n: fabric.kernel_routes(n) for n in NODES} == routes_before

            ping.send_signal(signal.SIGINT)
            out, _ = await ping.communicate()
            text = out.decode()
            print(f"\nMEASURED ping during the drill: {text.strip().splitlines()[-2]}")
            assert " 0% packet loss" in text, text
        finally:
            thaw()
            if ping is not None and ping.returncode is None:
                ping.kill()
                await ping.wait()
            await ns.stop()
            for rr, ev in stops.items():
                ev.set()
                await tasks[rr]

    try:
        asyncio.run(scenario())
    finally:
        thaw()
        ds.close()
        server.stop()
        subprocess.run(["rm", "-rf", str(server.run_dir)], check=False)
