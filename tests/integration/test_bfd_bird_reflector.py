"""BFD on the BIRD-engine reflector: ``l3net route-reflector --engine bird`` (real BIRD 2, real etcd) runs BFD to
its clients, which are l3net speakers (ExaBGP) with the agent's BFD (:class:`bgp.bfd.peers.BfdPeers`) in
namespaces.

Uses the fabric of tests.integration.bgp_fabric (every namespace on one bridge, so every session is single
hop). A client's link is cut (``ip link set eth0 down`` in n2: no FIN, no NOTIFICATION, as a power loss or a
dead NIC looks):
BIRD's BFD session to n2 goes down within the detection time (BIRD's own millisecond "Since" against the
cut), BIRD drops the BGP session and withdraws n2's block, and the other clients' kernels lose it long
before any BGP hold timer could (hold time 30 s here). The reflector's status record and ``l3net_bfd_*``
series show it; restoring the link brings everything back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from bgp.bfd import status as bfd_status
from bgp.bfd.packet import State
from bgp.bfd.peers import BfdPeers
from bgp.bird_control import command, parse_bfd_sessions
from bgp.cli import run_reflector
from bgp.view import build_node_view
from l3net import netns
from l3net.model.resource import Resource
from tests.integration.bgp_fabric import ADDR, NODES, Fabric, Nodes, block, fabric, node_res, report
from tests.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.needs_root]

__all__ = ["fabric"]  # the module-scoped fixture of tests.integration.bgp_fabric

CLUSTER = "1.1.1.1"
HOLD = 30          # far above the detection time: a drop within seconds is BFD's doing, not the hold timer's
INTERVAL_MS = 300
DETECT_S = 3 * INTERVAL_MS / 1000
SCHED_ALLOWANCE_S = 0.3  # one interval: BIRD's and our timers on the shared 2-core machine
WITHDRAW_ALLOWANCE_S = 2.0  # BIRD -> ExaBGP -> kernel after the detection; the hold timer would need ~20 s


def resources() -> tuple[list[Resource], list[Resource], list[Resource]]:
    nodes = [node_res(n) for n in NODES] + [node_res("rr1", routeReflectorClusterID=CLUSTER)]
    cfgs = [Resource("BGPConfiguration", "default", {
        "holdTime": f"{HOLD}s", "nodeToNodeMeshEnabled": False, "gracefulRestart": True,  # GR must not hold it
        "bfd": {"enabled": True, "minRxInterval": f"{INTERVAL_MS}ms", "minTxInterval": f"{INTERVAL_MS}ms",
                "multiplier": 3}})]
    peers = [Resource("BGPPeer", "to-rr", {"nodeSelector": "!has(rr)", "peerSelector": "has(rr)"})]
    return nodes, cfgs, peers


def test_bird_reflector_bfd_detects_a_cut_client(fabric: Fabric, tmp_path: Path, datastore, key_layout,
                                                 record_property: Callable[[str, object], None]) -> None:
    nodes, cfgs, peers = resources()
    for r in (*nodes, *cfgs, *peers):
        datastore.put(key_layout.resource(r.info.plural, r.name), r.to_json())
    rr_dir = tmp_path / "rr1"
    sock = rr_dir / "bird.ctl"

    def status_rows() -> dict[str, dict[str, object]]:
        rows = bfd_status.read(datastore, key_layout, "rr1")
        return {str(s["peer"]): s for s in rows} if rows is not None else {}

    async def bird_sessions() -> dict[str, object]:
        return parse_bfd_sessions(await asyncio.get_running_loop().run_in_executor(
            None, command, sock, "show bfd sessions"))

    async def scenario() -> None:
        stop = asyncio.Event()
        rr = asyncio.create_task(run_reflector(datastore, key_layout, "rr1", rr_dir, resync=0.5,
                                               netns=fabric.ns["rr1"], stop=stop, engine="bird"))
        ns = Nodes(fabric, tmp_path)
        bfd: dict[str, BfdPeers] = {}
        try:
            await ns.start(NODES, nodes, cfgs, peers)
            for name in NODES:
                b = BfdPeers(name, ns.sp[name], netns=fabric.ns[name])
                await b.start()
                b.set_view(build_node_view(name, nodes, cfgs, peers))
                bfd[name] = b
            await wait_for_async(ns.learned_everything, 60, "every block in every client's kernel via BIRD")
            conf = (rr_dir / "bird.conf").read_text()
            assert conf.count("direct;") == 3 and "protocol bfd" in conf, "single hop to the clients on its link"

            clients = {ADDR[n] for n in NODES}

            def all_up() -> bool:
                rows = status_rows()
                return (all(b.speaker.state(k) == State.UP for b in bfd.values() for k in list(b.speaker.keys()))
                        and set(rows) == clients and all(r["state"] == "up" for r in rows.values()))
            try:
                await wait_for_async(all_up, 30, "BFD Up on every client and in rr1's status record")
            except AssertionError as exc:
                clients_view = {n: b.status() for n, b in bfd.items()}
                raise AssertionError(f"{exc}: clients {clients_view}; rr1 {status_rows()}; "
                                     f"BIRD {await bird_sessions()}") from None
            rows = status_rows()
            assert all(r["multihop"] is False and r["txIntervalMs"] <= 1000 for r in rows.values()), rows
            await asyncio.sleep(2.0)  # past the poll sequences: both ends at 300 ms
            sessions = await bird_sessions()
            assert {p: (s.state, s.timeout_s) for p, s in sessions.items()} == {  # type: ignore[attr-defined]
                a: ("up", DETECT_S) for a in clients}, sessions
            before = {n: fabric.kernel_routes(n) for n in ("n1", "n3")}

            t_cut_wall, t_cut = time.time(), time.monotonic()
            netns.run(fabric.ns["n2"], ["ip", "link", "set", "eth0", "down"])
            n2 = ADDR["n2"]
            seen_down: dict[str, object] = {}

            async def bird_saw_down() -> bool:
                s = (await bird_sessions()).get(n2)
                if s is not None and s.state == "down":  # type: ignore[attr-defined]
                    seen_down["row"] = s
                    return True
                return False

            deadline = t_cut + HOLD / 2
            while not await bird_saw_down():
                assert time.monotonic() < deadline, "BIRD never declared its BFD session to n2 down"
                await asyncio.sleep(0.02)
            bird_detect = seen_down["row"].since - t_cut_wall  # type: ignore[attr-defined]
            gone = {}
            for n in ("n1", "n3"):
                await wait_for_async(lambda n=n: block("n2") not in fabric.kernel_routes(n), HOLD / 2,
                               f"n2's block gone from {n}'s kernel")
                gone[n] = time.monotonic() - t_cut
            report(record_property, "bird_rr_bfd_detection", bird_detect)
            for n, dt in gone.items():
                report(record_property, f"bird_rr_bfd_block_gone_{n}", dt)
            assert 0 < bird_detect <= DETECT_S + SCHED_ALLOWANCE_S, f"BIRD detected after {bird_detect:.3f}s"
            for n, dt in gone.items():
                assert dt <= DETECT_S + WITHDRAW_ALLOWANCE_S, f"{n}: {dt:.3f}s"
                after = fabric.kernel_routes(n)
                assert after == {k: v for k, v in before[n].items() if k != block("n2")}, "other routes untouched"

            # the reflector's status record and series say so (published on its next poll)
            await wait_for_async(lambda: status_rows().get(n2, {}).get("state") == "down", 10,
                                 "n2 down in rr1's status")
            rows = status_rows()
            assert rows[n2]["downEvents"] == 1 and rows[n2]["transitions"] >= 1
            assert all(rows[a]["state"] == "up" for a in clients - {n2}), rows
            assert REGISTRY.get_sample_value("l3net_bfd_session_state",
                                             {"node": "rr1", "peer": n2, "state": "down"}) == 1
            assert REGISTRY.get_sample_value("l3net_bfd_down_events_total",
                                             {"node": "rr1", "peer": n2, "diag": "unknown"}) == 1
            table = bfd_status.format_table(list(rows.values()))
            assert n2 in table and "single hop" in table

            t_back = time.monotonic()
            netns.run(fabric.ns["n2"], ["ip", "link", "set", "eth0", "up"])
            await wait_for_async(ns.learned_everything, 60, "n2's block back everywhere")
            report(record_property, "bird_rr_bfd_link_restored_block_back", time.monotonic() - t_back)
            await wait_for_async(all_up, 30, "every BFD session Up again")
        finally:
            netns.run(fabric.ns["n2"], ["ip", "link", "set", "eth0", "up"], check=False)
            for b in bfd.values():
                await b.stop()
            await ns.stop()
            stop.set()
            assert await asyncio.wait_for(rr, 30) == 0

    asyncio.run(scenario())
