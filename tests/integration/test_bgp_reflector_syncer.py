"""``l3net route-reflector`` follows etcd through l3net.syncer: peer-set changes arrive by watch, bad values are absent.

Real etcd (the shared test server, a unique key prefix) and a real ExaBGP in the
reflector's namespace; the clients need not run: the published peer table shows
the configured peers whatever their session state.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bgp import status as bgp_status
from bgp.cli import run_reflector
from l3net.model.resource import Resource
from tests.integration.bgp_fabric import ADDR, Fabric, fabric, node_res
from tests.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.needs_root]

__all__ = ["fabric"]


def test_reflector_follows_resources_by_watch_and_ignores_bad_values(fabric: Fabric, tmp_path: Path, datastore,
                                                                     key_layout) -> None:
    good = [node_res("n1"), node_res("rr1", routeReflectorClusterID="1.1.1.1"),
            Resource("BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False}),
            Resource("BGPPeer", "to-rr", {"nodeSelector": "!has(rr)", "peerSelector": "has(rr)"})]
    for r in good:
        datastore.put(key_layout.resource(r.info.plural, r.name), r.to_json())
    # a Node whose stored value does not validate, and one that is not even JSON: both absent
    bad = node_res("n2").to_document()
    bad["spec"]["bgp"]["ipv4Address"] = "not-an-address"
    datastore.put(key_layout.resource("nodes", "n2"), json.dumps(bad).encode())
    datastore.put(key_layout.resource("nodes", "n3"), b"{not json")

    def peers() -> list[str]:
        st = bgp_status.read(datastore, key_layout, "rr1")
        return sorted(p.address for p in st.peers) if st is not None else []

    async def scenario() -> None:
        stop = asyncio.Event()
        # a long publication interval: changes must arrive by watch, not by a periodic re-read
        task = asyncio.create_task(run_reflector(datastore, key_layout, "rr1", tmp_path / "rr1", resync=30,
                                                 netns=fabric.ns["rr1"], stop=stop))
        try:
            await wait_for_async(lambda: peers() == [ADDR["n1"]], 15, "the reflector publishes its one valid client")
            datastore.put(key_layout.resource("nodes", "n2"), node_res("n2").to_json())   # now valid
            await wait_for_async(lambda: peers() == [ADDR["n1"], ADDR["n2"]], 5, "a repaired Node is a client")
            datastore.delete(key_layout.resource("nodes", "n1"))
            await wait_for_async(lambda: peers() == [ADDR["n2"]], 5, "a deleted Node is no longer a client")
            assert not task.done()
        finally:
            stop.set()
            assert await task == 0
        assert bgp_status.read(datastore, key_layout, "rr1") is None, "the status lease is revoked on exit"

    asyncio.run(scenario())


def test_reflector_refuses_a_node_without_cluster_id(fabric: Fabric, tmp_path: Path, datastore, key_layout) -> None:
    datastore.put(key_layout.resource("nodes", "rr2"), node_res("rr2").to_json())
    code = asyncio.run(run_reflector(datastore, key_layout, "rr2", tmp_path / "rr2", netns=fabric.ns["rr2"]))
    assert code == 2
