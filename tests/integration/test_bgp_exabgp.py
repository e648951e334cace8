"""BGP with real ExaBGP processes in network namespaces: mesh, BIRD and l3net reflectors, FRR eBGP, faults.

One fabric per module (a bridge namespace and one namespace per router, from
tests.integration.bgp_fabric); each test starts its own speakers and reference
routers and stops them in finally. The fabric's tiny consumer installs each
node's learned best routes in its kernel with l3net's route protocol, so pings
between the nodes' pod addresses (10.244.N.1 on lo) prove the routes are right
in both directions.
Measured latencies are printed (run with -s) and written to the test report.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest

from bgp import status as bgp_status
from bgp.cli import run_reflector
from bgp.speaker import Speaker
from bgp.view import build_node_view
from l3net import netns
from l3net.model.resource import Resource
from tests.integration.bgp_fabric import (
    ADDR,
    BASE_CFG,
    HOLD,
    NET,
    NODES,
    Fabric,
    Nodes,
    bird,
    block,
    fabric,
    node_res,
    pod_ip,
    report,
)
from tests.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.needs_root]

__all__ = ["fabric"]  # the module-scoped fixture of tests.integration.bgp_fabric


def run_async(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
def test_rendered_golden_configs_pass_exabgp_validate(tmp_path: Path) -> None:
    golden = sorted((Path(__file__).parent.parent / "unit" / "golden" / "bgp").glob("*.conf"))
    assert golden
    for path in golden:
        # ExaBGP checks that the helper exists: point the golden helper at this interpreter
        conf = tmp_path / path.name
        conf.write_text(path.read_text().replace("/opt/l3net/bin/python", sys.executable))
        res = subprocess.run([sys.executable, "-m", "exabgp", "validate", str(conf)], capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 0, f"{path.name}: {res.stdout}{res.stderr}"
    bad = tmp_path / "bad.conf"
    bad.write_text((tmp_path / golden[0].name).read_text().replace("hold-time", "hold-tyme"))
    res = subprocess.run([sys.executable, "-m", "exabgp", "validate", str(bad)], capture_output=True, timeout=30)
    assert res.returncode != 0, "exabgp validate must catch a broken config"


def test_full_mesh_routes_pings_faults_and_status(fabric: Fabric, tmp_path: Path, datastore, key_layout,
                                                  record_property) -> None:
    nodes = [node_res(n) for n in NODES]
    cfgs = [Resource("BGPConfiguration", "default", dict(BASE_CFG))]

    async def scenario() -> None:
        ns = Nodes(fabric, tmp_path)
        try:
            await ns.start(NODES, nodes, cfgs, [])
            report(record_property, "mesh_start_to_all_kernel_routes",
                   await wait_for_async(ns.learned_everything, 20, "full mesh routes in every kernel"))
            for a in NODES:
                assert fabric.kernel_routes(a) == {block(b): [ADDR[b]] for b in NODES if b != a}
                rows = {r.address: r for r in ns.sp[a].peer_status()}
                assert {r.state for r in rows.values()} == {"up"} and len(rows) == 2
                assert all(r.received == 1 and r.advertised == 1 and r.peer_type == "node-to-node mesh"
                           for r in rows.values())
            for a in NODES:
                for b in NODES:
                    if a != b:
                        res = fabric.ping(a, b)
                        assert res.returncode == 0, f"{a} -> {b}: {res.stdout}{res.stderr}"

            # status goes to etcd and back in the format l3netctl reads
            bgp_status.publish(datastore, key_layout, "n1", ns.sp["n1"].peer_status(), as_number=64512,
                               router_id=ADDR["n1"])
            st = bgp_status.read(datastore, key_layout, "n1")
            assert st is not None and [p.address for p in st.peers] == [ADDR["n2"], ADDR["n3"]]
            assert "node-to-node mesh" in bgp_status.format_table(st)

            # a new workload block on n1 is learned and installed on n3
            extra = "10.244.100.0/26"
            t0 = time.monotonic()
            ns.sp["n1"].set_advertisements({block("n1"): None, extra: None})
            # Milliseconds when idle (the figure is reported); the timeout only bounds a hang, generously,
            # because a loaded 2-core CI machine can stall ExaBGP's Python for seconds.
            await wait_for_async(lambda: extra in fabric.kernel_routes("n3"), 15, "new block in n3's kernel")
            report(record_property, "announce_to_remote_kernel", time.monotonic() - t0)
            t0 = time.monotonic()
            ns.sp["n1"].set_advertisements({block("n1"): None})
            await wait_for_async(lambda: extra not in fabric.kernel_routes("n3"), 15, "withdrawn block gone")
            report(record_property, "withdraw_to_remote_kernel", time.monotonic() - t0)

            # a peer-set change reloads ExaBGP without dropping the unchanged sessions
            pid = ns.sp["n1"].exabgp_pid
            since = {r.address: r.since for r in ns.sp["n2"].peer_status()}
            more = [*nodes, Resource("Node", "n9", {"bgp": {"ipv4Address": f"{NET}.99/24"}})]
            ns.sp["n1"].set_view(build_node_view("n1", more, cfgs, []))
            await wait_for_async(lambda: ns.sp["n1"].stats["reloads"] == 1, 15, "debounced reload")
            await asyncio.sleep(1.0)
            assert ns.sp["n1"].exabgp_pid == pid, "reload, not restart"
            assert {r.address: r.since for r in ns.sp["n2"].peer_status()} == since, "no session flapped"
            assert {r.address: r.state for r in ns.sp["n1"].peer_status()} == {
                ADDR["n2"]: "up", ADDR["n3"]: "up", f"{NET}.99": "idle"}
            assert ns.sp["n1"].stats["command_errors"] == 0
            ns.sp["n1"].set_view(build_node_view("n1", nodes, cfgs, []))

            # kill -9 ExaBGP under a running speaker: peers drop n1's routes, the supervisor restarts it
            pid = ns.sp["n1"].exabgp_pid
            assert pid
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            # the kernel closes ExaBGP's sockets at once: the peers see the session drop, not a hold expiry
            await wait_for_async(lambda: block("n1") not in fabric.kernel_routes("n2")
                           and block("n1") not in fabric.kernel_routes("n3"), 15, "n1's routes withdrawn")
            report(record_property, "kill9_to_withdrawn_on_peers", time.monotonic() - t0)
            await wait_for_async(lambda: ns.sp["n1"].exabgp_pid not in (None, pid) and ns.learned_everything(), 15,
                           "supervisor restart and full reconvergence")
            report(record_property, "kill9_to_reconverged", time.monotonic() - t0)
            assert ns.sp["n1"].restarts == 1

            # a frozen node (no TCP close, like a power loss) is dropped by hold-time expiry
            pid3 = ns.sp["n3"].exabgp_pid
            assert pid3
            t0 = time.monotonic()
            os.killpg(pid3, signal.SIGSTOP)
            try:
                # Only the hold timer can drop a frozen peer (no FIN, no RST), so any finite bound proves it
                # fired; HOLD + 10 leaves room for a loaded machine (the real figure is reported).
                await wait_for_async(lambda: block("n3") not in fabric.kernel_routes("n1")
                               and block("n3") not in fabric.kernel_routes("n2"), HOLD + 10,
                               "frozen n3's routes withdrawn by hold-time expiry")
                report(record_property, "frozen_node_to_withdrawn", time.monotonic() - t0)
                assert fabric.ping("n1", "n2").returncode == 0, "the other pair keeps working"
            finally:
                os.killpg(pid3, signal.SIGCONT)
            await wait_for_async(ns.learned_everything, 30, "n3 back after it thaws")
        finally:
            await ns.stop()

    run_async(scenario())



@pytest.mark.skipif(shutil.which("bird") is None, reason="needs bird2")
def test_bird_route_reflector_with_mesh_off(fabric: Fabric, tmp_path: Path) -> None:
    nodes = [node_res(n) for n in NODES]
    cfgs = [Resource("BGPConfiguration", "default", {**BASE_CFG, "nodeToNodeMeshEnabled": False})]
    peers = [Resource("BGPPeer", "bird-rr", {"peerIP": ADDR["bird"], "asNumber": 64512})]

    async def scenario() -> None:
        ns = Nodes(fabric, tmp_path)
        with bird(fabric, tmp_path / "bird", NODES) as sock:
            try:
                await ns.start(NODES, nodes, cfgs, peers)
                assert [p.address for p in ns.sp["n1"].view.peers] == [ADDR["bird"]]  # type: ignore[union-attr]
                await wait_for_async(ns.learned_everything, 20, "routes reflected by BIRD in every kernel")
                for a in NODES:
                    assert fabric.kernel_routes(a) == {block(b): [ADDR[b]] for b in NODES if b != a}, \
                        "BIRD keeps the original next hop"
                    assert [r.peer_type for r in ns.sp[a].peer_status()] == ["global"]
                assert fabric.ping("n1", "n3").returncode == 0 and fabric.ping("n3", "n2").returncode == 0
                out = subprocess.run(["birdc", "-s", str(sock), "show", "route"], capture_output=True, text=True,
                                     timeout=10).stdout
                assert all(block(n) in out for n in NODES), out
            finally:
                await ns.stop()

    run_async(scenario())


@pytest.mark.parametrize("clusters", ["same-cluster", "two-clusters"])
def test_two_l3net_reflectors_and_killing_one_loses_no_packets(fabric: Fabric, tmp_path: Path, datastore,
                                                               key_layout, clusters: str) -> None:
    cid2 = "1.1.1.1" if clusters == "same-cluster" else "2.2.2.2"
    resources = [node_res(n) for n in NODES] + [
        node_res("rr1", routeReflectorClusterID="1.1.1.1"), node_res("rr2", routeReflectorClusterID=cid2),
        Resource("BGPConfiguration", "default", {**BASE_CFG, "nodeToNodeMeshEnabled": False}),
        Resource("BGPPeer", "to-rr", {"nodeSelector": "!has(rr)", "peerSelector": "has(rr)"}),
        Resource("BGPPeer", "rr-mesh", {"nodeSelector": "has(rr)", "peerSelector": "has(rr)"}),
    ]
    for r in resources:
        datastore.put(key_layout.resource(r.info.plural, r.name), r.to_json())
    nodes = [r for r in resources if r.kind == "Node"]
    cfgs = [r for r in resources if r.kind == "BGPConfiguration"]
    peers = [r for r in resources if r.kind == "BGPPeer"]

    async def scenario() -> None:
        stops = {rr: asyncio.Event() for rr in ("rr1", "rr2")}
        tasks = {rr: asyncio.create_task(run_reflector(datastore, key_layout, rr, tmp_path / rr, resync=0.5,
                                                       netns=fabric.ns[rr], stop=stops[rr]))
                 for rr in ("rr1", "rr2")}
        ns = Nodes(fabric, tmp_path)
        try:
            await ns.start(NODES, nodes, cfgs, peers)
            assert {p.peer_type for p in ns.sp["n1"].view.peers} == {"route reflector"}  # type: ignore[union-attr]
            await wait_for_async(ns.learned_everything, 25, "routes reflected by l3net in every kernel")

            def via_both() -> bool:
                return all(sorted(p.peer for p in ns.sp[a].rib.candidates(block(b))) == [ADDR["rr1"], ADDR["rr2"]]
                           for a in NODES for b in NODES if a != b)
            await wait_for_async(via_both, 15, "every route learned via both reflectors")
            for a in NODES:
                assert fabric.kernel_routes(a) == {block(b): [ADDR[b]] for b in NODES if b != a}
                for p in ns.sp[a].rib.candidates(block("n1" if a != "n1" else "n2")):
                    assert p.attrs.originator_id == p.next_hop, "ORIGINATOR_ID is the originating client"
                    assert p.attrs.cluster_list[0] in ("1.1.1.1", cid2), "CLUSTER_LIST starts with the RR's id"
                    assert p.attrs.originator_id != ADDR[a]

            def rr_status_up() -> bool:
                st = bgp_status.read(datastore, key_layout, "rr2")
                return st is not None and sum(p.state == "up" for p in st.peers) == 4
            await wait_for_async(rr_status_up, 30, "rr2 publishes 3 clients + rr1 up")

            # continuous ping n1 -> n3 while rr1 dies
            ping = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", fabric.ns["n1"], "ping", "-n", "-q", "-c", "150", "-i", "0.01",
                "-I", pod_ip("n1"), pod_ip("n3"), stdout=asyncio.subprocess.PIPE)
            await asyncio.sleep(0.3)
            stops["rr1"].set()
            assert await tasks["rr1"] == 0
            out, _ = await ping.communicate()
            assert ping.returncode == 0 and " 0% packet loss" in out.decode(), out.decode()
            # the clients notice rr1's session close on their own schedule: wait for it, then check the routes
            await wait_for_async(lambda: all(ADDR["rr1"] not in [p.peer for p in ns.sp[n].rib.candidates(block("n2"))]
                                       for n in ("n1", "n3")), 15, "rr1's paths dropped by its clients")
            assert ns.learned_everything(), "routes stay with one reflector gone"
        finally:
            await ns.stop()
            for rr, ev in stops.items():
                ev.set()
                await tasks[rr]

    run_async(scenario())


def test_l3net_reflector_fan_out_reaches_every_client_with_originator_and_cluster_list(
        fabric: Fabric, tmp_path: Path) -> None:
    """The reflector's batched fan-out (one ``neighbor A , neighbor B … announce attributes … nlri …``
    command per client UPDATE, through bgp.exabgp_run's patched matcher) gives every client the same
    routes: each other client's prefixes, once, via the reflector, next hop and ORIGINATOR_ID the
    originating client, CLUSTER_LIST the reflector's cluster ID; ExaBGP refuses no command."""
    cluster = "1.1.1.1"
    nodes = [node_res(n) for n in NODES] + [node_res("rr1", routeReflectorClusterID=cluster)]
    cfgs = [Resource("BGPConfiguration", "default", {**BASE_CFG, "nodeToNodeMeshEnabled": False})]
    peers = [Resource("BGPPeer", "to-rr", {"nodeSelector": "!has(rr)", "peerSelector": "has(rr)"})]
    owned = {n: [f"10.{100 + int(n[1:])}.{k}.0/24" for k in range(8)] for n in NODES}

    async def scenario() -> None:
        speakers: dict[str, Speaker] = {}
        try:
            for name in ("rr1", *NODES):
                sp = Speaker(name, tmp_path / name, netns=fabric.ns[name], backoff=(0.3, 2.0))
                await sp.start()
                view = build_node_view(name, nodes, cfgs, peers)
                assert view.errors == (), view.errors
                sp.set_view(view)
                speakers[name] = sp
            assert speakers["rr1"].view is not None and speakers["rr1"].view.cluster_id == cluster
            for name in NODES:
                speakers[name].set_advertisements(dict.fromkeys(owned[name]))

            def complete() -> bool:
                return all(speakers[a].rib.candidates(p) for a in NODES for b in NODES if b != a for p in owned[b])
            await wait_for_async(complete, 40, "every client holds every other client's prefixes")
            for a in NODES:
                got = {p for b in NODES if b != a for p in owned[b]}
                assert set(speakers[a].best_routes()) == got, "the same routes at every client, none of its own"
                for b in NODES:
                    if b == a:
                        continue
                    for pfx in owned[b]:
                        (path,) = speakers[a].rib.candidates(pfx)
                        assert path.peer == ADDR["rr1"] and path.next_hop == ADDR[b]
                        assert path.attrs.originator_id == ADDR[b], "ORIGINATOR_ID is the originating client"
                        assert path.attrs.cluster_list == (cluster,), "CLUSTER_LIST is the reflector's cluster ID"
            assert speakers["rr1"].stats["command_errors"] == 0
        finally:
            for sp in speakers.values():
                await sp.stop()

    run_async(scenario())


FRR_CONF = """
hostname frrpeer
log stdout informational
router bgp 65000
 bgp router-id {me}
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor {n1} remote-as 65001
 neighbor {n1} timers 2 {hold}
 address-family ipv4 unicast
  network 192.0.2.0/24
 exit-address-family
"""


@pytest.mark.skipif(not Path("/usr/lib/frr/bgpd").exists(), reason="needs frr")
def test_frr_ebgp_peer_exchanges_routes_both_ways(fabric: Fabric, tmp_path: Path) -> None:
    run = tmp_path / "frr"
    run.mkdir()
    (run / "bgpd.conf").write_text(FRR_CONF.format(me=ADDR["frr"], n1=ADDR["n1"], hold=HOLD))
    os.chmod(run, 0o777)
    # bgpd without zebra: -Z (no zebra), -S (stay root), its own vty socket dir; routes it learns stay in its RIB
    cmd = ["/usr/lib/frr/bgpd", "-f", str(run / "bgpd.conf"), "-i", str(run / "bgpd.pid"), "-Z", "-S",
           "--vty_socket", str(run), "-P", "0", "-l", ADDR["frr"]]
    proc = subprocess.Popen(netns.nsenter_cmd(fabric.ns["frr"], cmd), stdout=open(run / "bgpd.log", "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True)
    fabric.factory.pids.append(proc.pid)
    nodes = [node_res("n1", asNumber=65001)]
    cfgs = [Resource("BGPConfiguration", "default", {**BASE_CFG, "nodeToNodeMeshEnabled": False})]
    peers = [Resource("BGPPeer", "tor", {"node": "n1", "peerIP": ADDR["frr"], "asNumber": 65000})]

    def frr_routes() -> str:
        return subprocess.run(["vtysh", "--vty_socket", str(run), "-d", "bgpd", "-c", "show ip bgp"],
                              capture_output=True, text=True, timeout=10).stdout

    async def scenario() -> None:
        ns = Nodes(fabric, tmp_path)
        try:
            await ns.start(("n1",), nodes, cfgs, peers)
            peer = ns.sp["n1"].view.peers[0]  # type: ignore[union-attr]
            assert peer.ebgp and peer.name == "Node_10_77_0_30"
            await wait_for_async(lambda: fabric.kernel_routes("n1").get("192.0.2.0/24") == [ADDR["frr"]], 20,
                           "FRR's prefix in n1's kernel")
            path = ns.sp["n1"].rib.best_paths("192.0.2.0/24")[0]
            assert path.ebgp and path.attrs.as_path == (65000,)
            await wait_for_async(lambda: block("n1") in frr_routes(), 10, "n1's block in FRR's RIB")
            line = next(x for x in frr_routes().splitlines() if block("n1") in x)
            assert ADDR["n1"] in line and "65001" in line, line
        finally:
            await ns.stop()
            proc.terminate()
            proc.wait(10)

    run_async(scenario())


def keepalives_sent(fabric: Fabric, src: str, dst: str, seconds: float) -> int:
    """BGP KEEPALIVEs (19-byte messages of type 4) ``src`` sends to ``dst`` within ``seconds``, seen by tcpdump."""
    payload = "(ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2))"
    bgp_type = "tcp[((tcp[12] & 0xf0) >> 2) + 18]"
    flt = f"src host {ADDR[src]} and dst host {ADDR[dst]} and tcp port 179 and {payload} == 19 and {bgp_type} == 4"
    proc = subprocess.Popen(netns.nsenter_cmd(fabric.ns[src], ["tcpdump", "-i", "eth0", "-nn", "-l", "-q", flt]),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    fabric.factory.pids.append(proc.pid)
    try:
        time.sleep(seconds)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    return len([line for line in out.splitlines() if line.strip()])


def test_keepalive_time_sets_how_often_exabgp_sends_keepalives(fabric: Fabric, tmp_path: Path,
                                                               record_property) -> None:
    """keepaliveTime reaches the wire: 1 s sends about six keepalives in 6 s, hold/3 (10 s) at most one."""
    pair = ("n1", "n2")
    nodes = [node_res(n) for n in pair]

    async def count(name: str, timers: dict[str, object]) -> int:
        ns = Nodes(fabric, tmp_path / name)
        try:
            await ns.start(pair, nodes, [Resource("BGPConfiguration", "default", {**timers, "gracefulRestart": False})],
                           [])
            await wait_for_async(lambda: ns.learned_everything(pair), 20, "the session up, routes both ways")
            return await asyncio.to_thread(keepalives_sent, fabric, "n1", "n2", 6.0)
        finally:
            await ns.stop()

    asked = asyncio.run(count("asked", {"holdTime": "30s", "keepaliveTime": "1s"}))
    default = asyncio.run(count("default", {"holdTime": "30s"}))
    record_property("keepalives_in_6s", {"keepaliveTime 1s": asked, "hold/3": default})
    assert asked >= 4, f"{asked} keepalives in 6 s with keepaliveTime 1s"
    assert default <= 1, f"{default} keepalives in 6 s at ExaBGP's hold/3 = 10 s"


def test_addresses_are_distinct() -> None:
    assert len({ipaddress.ip_address(a) for a in ADDR.values()}) == len(ADDR)
