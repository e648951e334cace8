"""BFD wired to BGP, with real ExaBGP speakers in namespaces: a node whose link dies is gone from every
other kernel within BFD's detection time, long before the BGP hold timer, and comes back with BGP.

Uses the fabric of tests.integration.bgp_fabric (nodes n1..n3 on one bridge, each with an l3net Speaker
whose learned routes a tiny consumer installs with l3net's route protocol). Each node also runs
:class:`bgp.bfd.peers.BfdPeers`, as the agent does. The cut is ``ip link set eth0 down`` inside
n2's namespace: what a power loss or a dead NIC looks like to its peers (no FIN, no NOTIFICATION).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bgp.bfd.packet import State
from bgp.bfd.peers import BfdPeers
from bgp.bfd.speaker import PeerKey
from bgp.bfd.status import decode as decode_bfd_status
from bgp.bfd.status import encode as encode_bfd_status
from bgp.bfd.status import format_table as bfd_table
from bgp.view import build_node_view
from l3net import netns
from l3net.model.resource import Resource
from tests.integration.bgp_fabric import (
    ADDR,
    HOLD,
    NODES,
    Fabric,
    Nodes,
    block,
    fabric,
    node_res,
    report,
)
from tests.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.needs_root]

__all__ = ["fabric"]

INTERVAL = "300ms"
DETECT_S = 0.9
SCHED_ALLOWANCE_S = 0.3  # one interval: the shared 2-core machine delays timers and the route poll


def test_link_cut_drops_the_nodes_block_everywhere_within_detection_time(
        fabric: Fabric, tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    nodes = [node_res(n) for n in NODES]
    cfgs = [Resource("BGPConfiguration", "default", {
        "holdTime": f"{HOLD}s", "gracefulRestart": True,  # GR on: a BFD down must not wait for it
        "bfd": {"enabled": True, "minRxInterval": INTERVAL, "minTxInterval": INTERVAL, "multiplier": 3}})]

    async def scenario() -> None:
        ns = Nodes(fabric, tmp_path)
        bfd: dict[str, BfdPeers] = {}
        published: dict[str, list[object]] = {}
        try:
            await ns.start(NODES, nodes, cfgs, [])
            for name in NODES:
                b = BfdPeers(name, ns.sp[name], netns=fabric.ns[name],
                             on_status=lambda s, name=name: published.__setitem__(name, s))
                await b.start()
                b.set_view(build_node_view(name, nodes, cfgs, []))
                bfd[name] = b
            await wait_for_async(ns.learned_everything, 30, "full mesh routes in every kernel")

            def all_bfd_up() -> bool:
                return all(b.speaker.state(k) == State.UP for b in bfd.values() for k in list(b.speaker.keys()))
            await wait_for_async(all_bfd_up, 20, "every BFD session Up")
            assert all(len(b.speaker.keys()) == 2 and not any(k.multihop for k in list(b.speaker.keys()))
                       for b in bfd.values()), "one single-hop session per mesh peer"
            await asyncio.sleep(1.0)  # past the poll sequences: everybody at 300 ms
            before = {n: fabric.kernel_routes(n) for n in ("n1", "n3")}

            t_cut = time.monotonic()
            netns.run(fabric.ns["n2"], ["ip", "link", "set", "eth0", "down"])
            gone = {}
            for n in ("n1", "n3"):
                await wait_for_async(lambda n=n: block("n2") not in fabric.kernel_routes(n), HOLD - 1,
                               f"n2's block gone from {n}'s kernel")
                gone[n] = time.monotonic() - t_cut
            for n, dt in gone.items():
                report(record_property, f"bfd_linkcut_block_gone_{n}", dt)
                assert dt <= DETECT_S + SCHED_ALLOWANCE_S, f"{n}: {dt:.3f}s"
            for n in ("n1", "n3"):
                after = fabric.kernel_routes(n)
                assert after == {k: v for k, v in before[n].items() if k != block("n2")}, "other routes untouched"
                # The BGP session was reset by the teardown, not left to the hold timer: with keepalives every
                # HOLD/3 s, the hold timer could not expire before HOLD - HOLD/3 s after the cut.
                await wait_for_async(lambda n=n: next(r for r in ns.sp[n].peer_status()
                                                if r.address == ADDR["n2"]).state != "up",
                               max(0.1, t_cut + HOLD * 2 / 3 - time.monotonic()), f"{n}'s BGP session to n2 reset")
                st = {s.peer: s for s in published[n]}  # type: ignore[attr-defined]
                assert st[ADDR["n2"]].state == "down" and st[ADDR["n2"]].down_events == 1
                # the status document round-trips into the node status table
                node, sessions = decode_bfd_status(encode_bfd_status(n, published[n]))  # type: ignore[arg-type]
                assert node == n and "detection_time_expired" in bfd_table(sessions)

            t_back = time.monotonic()
            netns.run(fabric.ns["n2"], ["ip", "link", "set", "eth0", "up"])
            await wait_for_async(ns.learned_everything, 60, "n2's block back everywhere")
            report(record_property, "bfd_link_restored_block_back", time.monotonic() - t_back)
            await wait_for_async(all_bfd_up, 20, "every BFD session Up again")
            assert bfd["n1"].speaker.state(PeerKey(ADDR["n2"])) == State.UP
        finally:
            netns.run(fabric.ns["n2"], ["ip", "link", "set", "eth0", "up"], check=False)
            for b in bfd.values():
                await b.stop()
            await ns.stop()

    asyncio.run(scenario())
