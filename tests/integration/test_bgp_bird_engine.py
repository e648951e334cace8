"""``l3net route-reflector --engine bird`` with real BIRD 2, real etcd and real ExaBGP nodes in namespaces.

Two reflectors with one cluster ID (the dual-rr shape) run the BIRD engine from the
datastore; the clients are l3net speakers (ExaBGP) whose learned routes go into their
kernels. Proved here: routes reflected both ways with ORIGINATOR_ID and CLUSTER_LIST
right; MD5 passwords in force (a wrong one gets no session); a client added and removed
through the datastore while no other session resets and BIRD is never restarted;
graceful restart through a node's restart; BIRD killed and restarted by the engine; the
status record ``l3netctl node status`` reads. A second test feeds hostile passwords to a
running BIRD.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgp import status as bgp_status
from bgp.bird_config import password_error, render_bird_config
from bgp.bird_control import command, parse_protocols
from bgp.bird_engine import check_config
from bgp.cli import run_reflector
from bgp.view import build_node_view
from l3net import netns
from l3net.model.resource import Resource
from tests.integration.bgp_fabric import (
    ADDR,
    HOLD,
    Fabric,
    Nodes,
    agent_crash,
    agent_start,
    block,
    fabric,
    node_res,
    report,
)
from tests.netns_fixtures import NetnsFactory
from tests.route_monitor import RouteMonitor, deleted
from tests.waiting import wait_for, wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.needs_root,
              pytest.mark.skipif(shutil.which("bird") is None, reason="needs bird2")]

__all__ = ["fabric"]  # the module-scoped fixture of tests.integration.bgp_fabric

CLUSTER = "1.1.1.1"
PASSWORD = "rr-s3cret.42"
RESTART = 12      # restartTime: a restarted node must be back well within it on a loaded machine
EXTRA = "10.244.101.0/26"
REFLECTORS = ("rr1", "rr2")


def resources(clients: tuple[str, ...], password: str = PASSWORD) -> list[Resource]:
    return [node_res(n) for n in clients] + [
        node_res("rr1", routeReflectorClusterID=CLUSTER), node_res("rr2", routeReflectorClusterID=CLUSTER),
        Resource("BGPConfiguration", "default", {"holdTime": f"{HOLD}s", "restartTime": f"{RESTART}s",
                                                 "nodeToNodeMeshEnabled": False}),
        Resource("BGPPeer", "to-rr", {"nodeSelector": "!has(rr)", "peerSelector": "has(rr)",
                                      "password": {"value": password}}),
        Resource("BGPPeer", "rr-mesh", {"nodeSelector": "has(rr)", "peerSelector": "has(rr)"}),
    ]


def split(res: list[Resource]) -> tuple[list[Resource], list[Resource], list[Resource]]:
    return ([r for r in res if r.kind == "Node"], [r for r in res if r.kind == "BGPConfiguration"],
            [r for r in res if r.kind == "BGPPeer"])


def rr_rows(datastore, key_layout, rr: str) -> dict[str, bgp_status.PeerStatus]:  # type: ignore[name-defined]
    st_ = bgp_status.read(datastore, key_layout, rr)
    return {p.address: p for p in st_.peers} if st_ is not None else {}


def bird_pid(run_dir: Path) -> int | None:
    """The pid BIRD wrote (None while it is being written or absent)."""
    try:
        return int((run_dir / "bird.pid").read_text())
    except (OSError, ValueError):
        return None


def test_two_bird_engine_reflectors(fabric: Fabric, tmp_path: Path, datastore, key_layout, record_property) -> None:
    first = ("n1", "n2")
    for r in resources(first):
        datastore.put(key_layout.resource(r.info.plural, r.name), r.to_json())
    run_dirs = {rr: tmp_path / rr for rr in REFLECTORS}

    def up(rr: str, addrs: set[str]) -> bool:
        rows = rr_rows(datastore, key_layout, rr)
        return all(a in rows and rows[a].state == "up" for a in addrs)

    async def scenario() -> None:
        stops = {rr: asyncio.Event() for rr in REFLECTORS}
        tasks = {rr: asyncio.create_task(run_reflector(datastore, key_layout, rr, run_dirs[rr], resync=0.5,
                                                       netns=fabric.ns[rr], stop=stops[rr], engine="bird"))
                 for rr in REFLECTORS}
        ns = Nodes(fabric, tmp_path)
        mon: RouteMonitor | None = None

        def via_both(names: tuple[str, ...]) -> bool:
            return all(sorted(p.peer for p in ns.sp[a].rib.candidates(block(b))) == [ADDR["rr1"], ADDR["rr2"]]
                       for a in names for b in names if a != b)

        try:
            t0 = time.monotonic()
            await ns.start(first, *split(resources(first)))
            await wait_for_async(lambda: ns.learned_everything(first), 30, "n1 <-> n2 through the BIRD reflectors")
            report(record_property, "bird_engine_start_to_routes", time.monotonic() - t0)
            await wait_for_async(lambda: via_both(first), 20, "every route learned via both reflectors")

            # reflected both ways, attributes per RFC 4456, next hop kept
            for a, b in (("n1", "n2"), ("n2", "n1")):
                assert fabric.kernel_routes(a) == {block(b): [ADDR[b]]}
                for p in ns.sp[a].rib.candidates(block(b)):
                    assert p.attrs.originator_id == ADDR[b], "ORIGINATOR_ID is the originating client"
                    assert p.attrs.cluster_list == (CLUSTER,), "CLUSTER_LIST is exactly the cluster's ID"
                    assert p.next_hop == ADDR[b]
            # the status record (l3netctl node status): both clients and the other reflector up
            for rr, other in (("rr1", "rr2"), ("rr2", "rr1")):
                await wait_for_async(lambda rr=rr, other=other: up(rr, {ADDR["n1"], ADDR["n2"], ADDR[other]}), 20,
                               f"{rr} publishes its peers up")
                # Route counts come from BIRD's slower 'show protocols all' poll: they may trail "up".
                await wait_for_async(lambda rr=rr: (lambda r: r.received == 1 and r.advertised >= 1)(
                    rr_rows(datastore, key_layout, rr)[ADDR["n1"]]), 20, f"{rr} publishes n1's route counts")
                rows = rr_rows(datastore, key_layout, rr)
                assert rows[ADDR["n1"]].peer_type == "node specific" and rows[ADDR["n1"]].received == 1
                assert rows[ADDR["n1"]].advertised >= 1, "n2's block goes to n1"
                text = bgp_status.format_table(bgp_status.read(datastore, key_layout, rr))  # type: ignore[arg-type]
                assert ADDR["n1"] in text and "Established" in text

            # a client added through the datastore; MD5 enforced: with the wrong password it gets no session
            pids = {rr: bird_pid(run_dirs[rr]) for rr in REFLECTORS}
            since = {n: {r.address: r.since for r in ns.sp[n].peer_status()} for n in first}
            rr_since = {rr: {a: r.since for a, r in rr_rows(datastore, key_layout, rr).items()} for rr in REFLECTORS}
            n3 = node_res("n3")
            datastore.put(key_layout.resource("nodes", "n3"), n3.to_json())
            await wait_for_async(lambda: all(ADDR["n3"] in rr_rows(datastore, key_layout, rr) for rr in REFLECTORS), 20,
                           "both reflectors configure n3")
            await ns.start(("n3",), *split(resources(("n1", "n2", "n3"), password="wrong-password")))
            await asyncio.sleep(max(8.0, 3 * HOLD / 2))
            assert not up("rr1", {ADDR["n3"]}) and not up("rr2", {ADDR["n3"]}), "a wrong MD5 password gets no session"
            assert block("n3") not in fabric.kernel_routes("n1")
            await ns.sp.pop("n3").stop()   # the node is fixed and restarted with the right password
            t1 = time.monotonic()
            await ns.start(("n3",), *split(resources(("n1", "n2", "n3"))))
            await wait_for_async(ns.learned_everything, 30, "n3 with the right password: routes everywhere")
            report(record_property, "bird_engine_client_added_to_routes", time.monotonic() - t1)
            await wait_for_async(lambda: via_both(("n1", "n2", "n3")), 20, "n3's routes via both reflectors")
            assert {rr: bird_pid(run_dirs[rr]) for rr in REFLECTORS} == pids, "configure, not restart"
            assert {n: {r.address: r.since for r in ns.sp[n].peer_status()} for n in first} == since, \
                "no other session reset (client side)"
            for rr in REFLECTORS:
                rows = rr_rows(datastore, key_layout, rr)
                # BIRD's millisecond stamps of an unchanged protocol were seen to move by 1 ms across a configure;
                # a reset would stamp them after they were read, seconds after the sessions first came up.
                moved = {a: rows[a].since - t for a, t in rr_since[rr].items() if abs(rows[a].since - t) > 0.5}
                assert moved == {}, f"no other session reset (BIRD): {moved}"

            # graceful restart: n1's node restarts; n2 keeps n1's block throughout, the stale EXTRA goes after EOR
            ns.sp["n1"].set_advertisements({block("n1"): None, EXTRA: None})
            await wait_for_async(lambda: EXTRA in fabric.kernel_routes("n2"), 20, "EXTRA on n2")
            mon = RouteMonitor(fabric.ns["n2"], fabric.factory)
            t2 = time.monotonic()
            await agent_crash(ns, "n1")
            await wait_for_async(lambda: not up("rr1", {ADDR["n1"]}) and not up("rr2", {ADDR["n1"]}), 20,
                           "both reflectors see n1's session drop")
            assert {block("n1"), EXTRA} <= set(fabric.kernel_routes("n2")), "n2 keeps them through the restart"
            await agent_start(ns, "n1", split(resources(("n1", "n2", "n3"))), [block("n1")])
            await wait_for_async(lambda: EXTRA not in fabric.kernel_routes("n2"), RESTART + 10, "stale EXTRA swept")
            report(record_property, "bird_engine_gr_kill_to_stale_swept", time.monotonic() - t2)
            lines = mon.stop()
            mon = None
            assert deleted(lines, block("n1")) == [], f"n1's block was deleted on n2 during its restart: {lines}"
            await wait_for_async(ns.learned_everything, 20, "everything back after n1's restart")

            # the client removed through the datastore: its sessions go, nobody else's
            since = {n: {r.address: r.since for r in ns.sp[n].peer_status()} for n in ("n1", "n2")}
            datastore.delete(key_layout.resource("nodes", "n3"))
            await wait_for_async(lambda: all(ADDR["n3"] not in rr_rows(datastore, key_layout, rr) for rr in REFLECTORS),
                           20, "n3 gone from both reflectors")
            await wait_for_async(lambda: block("n3") not in fabric.kernel_routes("n1")
                           and block("n3") not in fabric.kernel_routes("n2"), 20, "n3's routes withdrawn")
            assert {n: {r.address: r.since for r in ns.sp[n].peer_status()} for n in ("n1", "n2")} == since
            assert {rr: bird_pid(run_dirs[rr]) for rr in REFLECTORS} == pids

            # BIRD killed: the engine starts a new one, sessions and routes come back
            pid = pids["rr1"]
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await wait_for_async(lambda: bird_pid(run_dirs["rr1"]) not in (None, pids["rr1"])
                           and up("rr1", {ADDR["n1"], ADDR["n2"]}), 30, "rr1's BIRD restarted and sessions up")
            await wait_for_async(lambda: via_both(("n1", "n2")), 30, "routes via rr1 again")
            assert not tasks["rr1"].done() and not tasks["rr2"].done()
        finally:
            if mon is not None:
                mon.stop()
            await ns.stop()
            for rr, ev in stops.items():
                ev.set()
                assert await tasks[rr] == 0
        for rr in REFLECTORS:
            assert not (run_dirs[rr] / "bird.ctl").exists(), "the engine stops its BIRD"

    asyncio.run(scenario())


def test_bird_engine_applies_bgp_filters_and_prefix_limits(fabric: Fabric, tmp_path: Path, datastore,
                                                           key_layout) -> None:
    """The reflector's own BGPPeer names a BGPFilter that rejects n2's block on import and caps n3 at two
    prefixes; the clients' side has neither, so what n1 learns shows BIRD's import filter and limit at work."""
    clients = ("n1", "n2", "n3")
    extras = ("10.244.103.0/26", "10.244.103.64/26")
    nodes = [node_res(n) for n in clients] + [node_res("rr1", routeReflectorClusterID=CLUSTER)]
    config = Resource("BGPConfiguration", "default", {"holdTime": f"{HOLD}s", "nodeToNodeMeshEnabled": False})
    rr_side = [Resource("BGPPeer", "rr-to-clients", {"nodeSelector": "has(rr)", "peerSelector": "!has(rr)",
                                                     "filters": ["no-n2"], "maxPrefixes": 2}),
               Resource("BGPFilter", "no-n2", {"importV4": [{"action": "Reject", "matchOperator": "Equal",
                                                             "cidr": block("n2")}]})]
    for r in [*nodes, config, *rr_side]:
        datastore.put(key_layout.resource(r.info.plural, r.name), r.to_json())
    client_side = [Resource("BGPPeer", "to-rr", {"nodeSelector": "!has(rr)", "peerSelector": "has(rr)"})]

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_reflector(datastore, key_layout, "rr1", tmp_path / "rr1", resync=0.5,
                                                 netns=fabric.ns["rr1"], stop=stop, engine="bird"))
        ns = Nodes(fabric, tmp_path)
        try:
            await ns.start(clients, nodes, [config], client_side)
            ns.sp["n3"].set_advertisements({block("n3"): None, **dict.fromkeys(extras)})
            await wait_for_async(lambda: block("n1") in fabric.kernel_routes("n3")
                                 and len(set(fabric.kernel_routes("n1")) & {block("n3"), *extras}) == 2, 30,
                                 "n1's block at n3; two of n3's three prefixes at n1")
            await asyncio.sleep(3)   # time for anything that should not arrive to arrive
            n1 = set(fabric.kernel_routes("n1"))
            assert block("n2") not in n1, "the BGPFilter rejects n2's block at the reflector"
            assert len(n1 & {block("n3"), *extras}) == 2, f"maxPrefixes 2 for n3 at the reflector: {n1}"
            assert block("n1") in fabric.kernel_routes("n2"), "n2's session is up and reflects the rest"
        finally:
            await ns.stop()
            stop.set()
            assert await task == 0

    asyncio.run(scenario())


# -- hostile passwords against a running BIRD ---------------------------------------------------------

class _Bird:
    """One BIRD in its own namespace (only lo), reconfigured per example."""

    def __init__(self, factory: NetnsFactory, run_dir: Path) -> None:
        self.ns = factory("hpw")
        netns.run(self.ns, ["ip", "addr", "add", "10.0.0.2/24", "dev", "lo"])
        self.dir = run_dir
        self.conf, self.sock = run_dir / "bird.conf", run_dir / "bird.ctl"
        self.conf.write_text("router id 10.0.0.2;\nprotocol device { }\n")
        self.proc = subprocess.Popen(netns.nsenter_cmd(self.ns, ["bird", "-f", "-c", str(self.conf),
                                                                 "-s", str(self.sock)]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        factory.pids.append(self.proc.pid)
        wait_for(self.sock.exists, 10, "BIRD's control socket")

    def protocols(self) -> set[str]:
        return set(parse_protocols(command(self.sock, "show protocols all")))


@pytest.fixture(scope="module")
def hostile_bird(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Bird]:
    factory = NetnsFactory()
    try:
        b = _Bird(factory, tmp_path_factory.mktemp("hostile-bird"))
        yield b
        b.proc.terminate()
        b.proc.wait(10)
    finally:
        factory.cleanup()


CLIENTS = [Resource("Node", n, {"bgp": {"ipv4Address": f"10.0.0.{i}/24"}}) for i, n in ((11, "c1"), (12, "c2"))]
RR = Resource("Node", "rr", {"bgp": {"ipv4Address": "10.0.0.2/24", "routeReflectorClusterID": CLUSTER}},
              labels={"rr": "y"})
HOSTILE = st.one_of(
    st.text(max_size=90),
    st.lists(st.sampled_from(['"', "\\", "\n", ";", "}", "{", "#", "/*", "*/", "protocol bgp x {", "'", "%",
                              "\x00", "\t", "a", " "]), max_size=12).map("".join))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pw=HOSTILE)
def test_hostile_password_is_refused_or_runs_exactly_the_intended_protocols(hostile_bird: _Bird, pw: str) -> None:
    peers = [Resource("BGPPeer", "to-rr", {"nodeSelector": "!has(rr)", "peerSelector": "has(rr)",
                                           "password": {"value": pw}})]
    view = build_node_view("rr", [*CLIENTS, RR], [Resource("BGPConfiguration", "default",
                                                            {"nodeToNodeMeshEnabled": False})], peers)
    if view.errors:   # refused at the edge (the model's check): no peers at all
        assert not view.peers
        return
    rendered = render_bird_config(view)
    if password_error(pw) is not None:
        assert {e.path for e in rendered.errors} == {f"peer {p.name}" for p in view.peers}
        assert rendered.protocols == {}
    else:
        assert rendered.errors == () and sorted(rendered.protocols.values()) == ["10.0.0.11", "10.0.0.12"]
    candidate = hostile_bird.dir / "candidate.conf"
    candidate.write_text(rendered.text)
    check = check_config("bird", candidate)
    assert check.ok, (pw, check.message)
    os.replace(candidate, hostile_bird.conf)
    command(hostile_bird.sock, "configure")
    wait_for(lambda: hostile_bird.protocols() == set(rendered.protocols), 10,
                   f"BIRD runs exactly {sorted(rendered.protocols)}")


# -- the supervisor on its own: a refused configuration, adoption after a crash of the reflector -------

def _engine_view(clients: int, password: str | None = None) -> object:
    nodes = [RR, *(Resource("Node", f"c{i}", {"bgp": {"ipv4Address": f"10.0.0.{10 + i}/24"}})
                   for i in range(clients))]
    spec: dict[str, object] = {"nodeSelector": "!has(rr)", "peerSelector": "has(rr)"}
    if password:
        spec["password"] = {"value": password}
    return build_node_view("rr", nodes, [Resource("BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False})],
                           [Resource("BGPPeer", "to-rr", spec)])


def test_engine_keeps_the_last_good_config_and_adopts_a_running_bird(netns_factory: NetnsFactory,
                                                                       tmp_path: Path) -> None:
    from bgp.bird_config import BirdConfig
    from bgp.bird_engine import BirdEngine

    ns = netns_factory("eng")
    netns.run(ns, ["ip", "addr", "add", "10.0.0.2/24", "dev", "lo"])
    run_dir = tmp_path / "rr"

    async def scenario() -> None:
        a = BirdEngine("rr", run_dir, netns=ns, poll_interval=0.2)
        await a.start()
        try:
            a.set_view(_engine_view(2))  # type: ignore[arg-type]
            await wait_for_async(lambda: a.bird_pid is not None and len(a.bird_protocols) == 2, 15,
                           "BIRD up with 2 protocols")
            pid = a.bird_pid
            assert pid is not None
            netns_factory.pids.append(pid)
            good = (run_dir / "bird.conf").read_text()
            # a configuration BIRD refuses (what a renderer bug would produce; no public way in, by design):
            # not applied, BIRD untouched
            a._desired = BirdConfig(text=good + "protocol bgp broken {\n", protocols={})
            a._wake.set()
            await wait_for_async(lambda: a.refused_configs == 1, 15, "the broken configuration refused by bird -p")
            await asyncio.sleep(0.5)
            assert (run_dir / "bird.conf").read_text() == good and a.bird_pid == pid and a.reconfigurations == 0
            assert set(a.bird_protocols) == {"Node_10_0_0_10", "Node_10_0_0_11"}
            # a good change is applied with `configure` (no restart): one client more
            a.set_view(_engine_view(3))  # type: ignore[arg-type]
            await wait_for_async(lambda: len(a.bird_protocols) == 3, 15, "the third client configured")
            assert a.bird_pid == pid and a.reconfigurations == 1 and a.restarts == 0
        finally:
            # the reflector "crashes": its supervisor task dies, its BIRD (own session) keeps running
            assert a._task is not None
            a._task.cancel()
        await asyncio.sleep(0.3)
        assert os.path.exists(f"/proc/{pid}"), "BIRD outlives the reflector process"
        b = BirdEngine("rr", run_dir, netns=ns, poll_interval=0.2)
        await b.start()
        try:
            b.set_view(_engine_view(3))  # type: ignore[arg-type]
            await wait_for_async(lambda: len(b.bird_protocols) == 3, 15, "the new engine reads the adopted BIRD")
            await asyncio.sleep(0.5)
            assert b.bird_pid == pid and b.restarts == 0 and b.reconfigurations == 0, "adopted, not restarted"
        finally:
            await b.stop()
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()

    asyncio.run(scenario())
