"""BGPPeer ``sourceAddress`` and ``keepOriginalNextHop`` with real processes: ExaBGP nodes, BIRD as reference router,
the BIRD reflector engine from etcd.

- sourceAddress None: node n1's BGP address is 10.77.0.1, but it also holds 10.78.0.1 on the link, and the
  reference router (BIRD) accepts a session from 10.78.0.1 only. ExaBGP with ``local-address auto`` connects
  unbound, the kernel picks 10.78.0.1 by route, and the session comes up with that next hop; with UseNodeIP the
  session is bound to 10.77.0.1 and BIRD turns it away. A reload of ExaBGP (a peer added) keeps announcing.
- keepOriginalNextHop: a BIRD-engine reflector passes n1's block to an eBGP router (BIRD, AS 65000) on a link of
  its own (BIRD keeps a next hop on the peer's own interface anyway); with the field true the router sees n1's
  next hop, with it false the reflector's address on that link (BIRD's eBGP default).
- ebgpMultihop: a BIRD-engine reflector's eBGP session to a router three hops away (two forwarding namespaces
  between) stays down with ebgpMultihop 2 (`multihop 2`: the TTL runs out at the second forwarder) and comes up
  with 3.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path

import pytest

from bgp.bird_control import BirdError, command
from bgp.cli import run_reflector
from bgp.view import build_node_view
from l3net import netns
from l3net.model.resource import Resource
from tests.integration.bgp_fabric import (
    ADDR,
    HOLD,
    Fabric,
    Nodes,
    bird,
    bird_established,
    block,
    fabric,
    node_res,
    report,
)
from tests.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.needs_root,
              pytest.mark.skipif(shutil.which("bird") is None, reason="needs bird2")]

__all__ = ["fabric"]  # the module-scoped fixture of tests.integration.bgp_fabric

SIDE_NET = "10.78.0"          # a second subnet on the same link: n1 and BIRD both hold an address in it
N1_SIDE, BIRD_SIDE = f"{SIDE_NET}.1", f"{SIDE_NET}.20"
BIRD_PREFIX = "192.0.2.0/24"

# BIRD knows n1 only by its side address: a session from 10.77.0.1 is no configured neighbour, refused.
SIDE_ROUTER = """
router id {rr};
log stderr all;
protocol device {{ }}
protocol static {{ ipv4; route {prefix} unreachable; }}
protocol bgp n1 {{
  local {bird_side} as 64512;
  neighbor {n1_side} as 64512;
  passive on;
  hold time {hold};
  ipv4 {{ import all; export all; }};
}}
{clients}
"""

# An eBGP router (AS 65000) on a link of its own to the reflector rr1; it resolves next hops recursively over the
# fabric's subnet (so a kept next hop is a usable route too) and exports nothing.
LINK_RR1, LINK_ROUTER = "10.79.0.10", "10.79.0.20"
EBGP_ROUTER = """
router id {rr};
log stderr all;
protocol device {{ }}
protocol direct {{ ipv4; }}
protocol bgp rr1 {{
  local {router} as 65000;
  neighbor {rr1} as 64512;
  multihop 2;
  hold time {hold};
  connect retry time 1;
  ipv4 {{ gateway recursive; import all; export none; }};
}}
{clients}
"""


# The router three hops from rr1 (rr1 - hop1 - hop2 - router), passive: only rr1's packets, with rr1's TTL, can
# start the session.
FAR_RR1, FAR_ROUTER = "10.85.0.10", "10.87.0.20"
FAR_ROUTER_CONF = """
router id {rr};
log stderr all;
protocol device {{ }}
protocol bgp rr1 {{
  local {router} as 65000;
  neighbor {rr1} as 64512;
  multihop;
  passive on;
  hold time {hold};
  ipv4 {{ import all; export none; }};
}}
{clients}
"""


def bird_next_hop(sock: Path, prefix: str) -> str | None:
    """The BGP.next_hop BIRD holds for ``prefix`` (None: no such route, or BIRD not up yet)."""
    try:
        text = "\n".join(t for _, t in command(sock, f"show route all {prefix}"))
    except BirdError:
        return None
    m = re.search(r"BGP\.next_hop: (\S+)", text)
    return m.group(1) if m else None


def add_side_addresses(fabric: Fabric) -> None:
    for name, addr in (("n1", N1_SIDE), ("bird", BIRD_SIDE)):
        netns.run(fabric.ns[name], ["ip", "addr", "replace", f"{addr}/24", "dev", "eth0"])


def test_source_address_none_lets_the_kernel_pick_the_source(fabric: Fabric, tmp_path: Path,
                                                            record_property) -> None:
    add_side_addresses(fabric)
    nodes = [node_res("n1")]
    cfgs = [Resource("BGPConfiguration", "default", {"holdTime": f"{HOLD}s", "gracefulRestart": False,
                                                     "nodeToNodeMeshEnabled": False})]

    def peer(source: str) -> Resource:
        return Resource("BGPPeer", "side", {"node": "n1", "peerIP": BIRD_SIDE, "asNumber": 64512,
                                            "sourceAddress": source})

    async def scenario(sock: Path) -> None:
        # UseNodeIP: bound to 10.77.0.1, which BIRD does not know: no session
        bound = Nodes(fabric, tmp_path / "bound")
        try:
            await bound.start(("n1",), nodes, cfgs, [peer("UseNodeIP")])
            await asyncio.sleep(2 * HOLD / 3)
            assert [r.state for r in bound.sp["n1"].peer_status()] != ["up"]
            assert bird_next_hop(sock, block("n1")) is None
        finally:
            await bound.stop()

        # None: the kernel picks 10.78.0.1 (the route to 10.78.0.0/24), BIRD accepts it, next hop self is it
        ns = Nodes(fabric, tmp_path / "unbound")
        try:
            t0 = time.monotonic()
            await ns.start(("n1",), nodes, cfgs, [peer("None")])
            await wait_for_async(lambda: bird_next_hop(sock, block("n1")) == N1_SIDE, 20,
                                 "n1's block at BIRD with the kernel's source as next hop")
            report(record_property, "source_none_session_to_route", time.monotonic() - t0)
            await wait_for_async(lambda: fabric.kernel_routes("n1").get(BIRD_PREFIX) == [BIRD_SIDE], 10,
                                 "BIRD's prefix in n1's kernel")

            # a peer added reloads ExaBGP; the established session stays and announcements still go out
            sp = ns.sp["n1"]
            pid = sp.exabgp_pid
            more = [peer("None"), Resource("BGPPeer", "other", {"node": "n1", "peerIP": ADDR["n2"],
                                                                "asNumber": 64512})]
            reloads = sp.stats["reloads"]
            sp.set_view(build_node_view("n1", nodes, cfgs, more))
            await wait_for_async(lambda: sp.stats["reloads"] == reloads + 1, 15, "debounced reload")
            await wait_for_async(lambda: ADDR["n2"] in sp.routing.configured, 15, "the reloaded configuration")
            extra = "10.244.110.0/26"
            sp.set_advertisements({block("n1"): None, extra: None})
            await wait_for_async(lambda: bird_next_hop(sock, extra) == N1_SIDE, 15,
                                 "a prefix announced after the reload reaches BIRD")
            assert sp.exabgp_pid == pid, "reloaded, not restarted"
            assert bird_next_hop(sock, block("n1")) == N1_SIDE
        finally:
            await ns.stop()

    with bird(fabric, tmp_path / "bird", (), template=SIDE_ROUTER, prefix=BIRD_PREFIX, bird_side=BIRD_SIDE,
              n1_side=N1_SIDE) as sock:
        asyncio.run(scenario(sock))


def test_bird_engine_keeps_the_original_next_hop_for_an_ebgp_peer(fabric: Fabric, tmp_path: Path, datastore,
                                                                  key_layout) -> None:
    cluster = "1.1.1.1"
    nodes = [node_res("n1"), node_res("rr1", routeReflectorClusterID=cluster)]
    config = Resource("BGPConfiguration", "default", {"holdTime": f"{HOLD}s", "nodeToNodeMeshEnabled": False})
    rr_side = Resource("BGPPeer", "rr-to-clients", {"nodeSelector": "has(rr)", "peerSelector": "!has(rr)"})
    client_side = [Resource("BGPPeer", "to-rr", {"nodeSelector": "!has(rr)", "peerSelector": "has(rr)"})]

    fabric.factory.veth(fabric.ns["rr1"], "side0", fabric.ns["bird"], "side0")
    netns.run(fabric.ns["rr1"], ["ip", "addr", "add", f"{LINK_RR1}/24", "dev", "side0"])
    netns.run(fabric.ns["bird"], ["ip", "addr", "add", f"{LINK_ROUTER}/24", "dev", "side0"])

    def upstream(keep: bool) -> Resource:
        # sourceAddress None too: the reflector's BIRD writes no local address, the kernel picks 10.79.0.10;
        # ebgpMultihop because the router is off rr1's node subnet (it is one hop away on side0)
        return Resource("BGPPeer", "upstream", {"node": "rr1", "peerIP": LINK_ROUTER, "asNumber": 65000,
                                                "ebgpMultihop": 2, "keepOriginalNextHop": keep,
                                                "sourceAddress": "None"})

    def put(r: Resource) -> None:
        datastore.put(key_layout.resource(r.info.plural, r.name), r.to_json())

    for r in [*nodes, config, rr_side, upstream(True)]:
        put(r)

    async def scenario(sock: Path) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_reflector(datastore, key_layout, "rr1", tmp_path / "rr1", resync=0.5,
                                                 netns=fabric.ns["rr1"], stop=stop, engine="bird"))
        ns = Nodes(fabric, tmp_path)
        try:
            await ns.start(("n1",), nodes, [config], client_side)
            await wait_for_async(lambda: bird_next_hop(sock, block("n1")) == ADDR["n1"], 30,
                                 "n1's block at the eBGP router with n1's own next hop (next hop keep)")
            texts = [p.read_text() for p in (tmp_path / "rr1").rglob("*.conf")]
            assert any("next hop keep;" in t and "  multihop 2;" in t for t in texts), "ebgpMultihop: multihop 2"
            put(upstream(False))
            await wait_for_async(lambda: bird_next_hop(sock, block("n1")) == LINK_RR1, 30,
                                 "without keepOriginalNextHop: the reflector's address (BIRD's eBGP default)")
        finally:
            await ns.stop()
            stop.set()
            assert await task == 0

    with bird(fabric, tmp_path / "ebgp", (), template=EBGP_ROUTER, rr1=LINK_RR1, router=LINK_ROUTER) as sock:
        asyncio.run(scenario(sock))


def test_bird_engine_ebgp_multihop_is_the_ttl_of_the_session(fabric: Fabric, tmp_path: Path, datastore,
                                                             key_layout, record_property) -> None:
    hop1, hop2 = fabric.factory("hop1"), fabric.factory("hop2")
    rr1, router = fabric.ns["rr1"], fabric.ns["bird"]
    for a_ns, a_if, a_ip, b_ns, b_if, b_ip in ((rr1, "mh0", FAR_RR1, hop1, "mh0", "10.85.0.1"),
                                               (hop1, "mh1", "10.86.0.1", hop2, "mh1", "10.86.0.2"),
                                               (hop2, "mh2", "10.87.0.2", router, "mh2", FAR_ROUTER)):
        fabric.factory.veth(a_ns, a_if, b_ns, b_if)
        netns.run(a_ns, ["ip", "addr", "add", f"{a_ip}/24", "dev", a_if])
        netns.run(b_ns, ["ip", "addr", "add", f"{b_ip}/24", "dev", b_if])
    for ns in (hop1, hop2):
        netns.write_sysctl("net.ipv4.ip_forward", 1, ns)
    for ns, net, via in ((rr1, "10.87.0.0/24", "10.85.0.1"), (hop1, "10.87.0.0/24", "10.86.0.2"),
                         (hop2, "10.85.0.0/24", "10.86.0.1"), (router, "10.85.0.0/24", "10.87.0.2")):
        netns.run(ns, ["ip", "route", "add", net, "via", via])

    nodes = [node_res("rr1", routeReflectorClusterID="1.1.1.1")]
    config = Resource("BGPConfiguration", "default", {"holdTime": f"{HOLD}s", "nodeToNodeMeshEnabled": False})

    def far(hops: int) -> Resource:
        # sourceAddress None: the kernel sources rr1's packets from 10.85.0.10, the address the router knows
        return Resource("BGPPeer", "far", {"node": "rr1", "peerIP": FAR_ROUTER, "asNumber": 65000,
                                           "ebgpMultihop": hops, "sourceAddress": "None"})

    def put(r: Resource) -> None:
        datastore.put(key_layout.resource(r.info.plural, r.name), r.to_json())

    for r in [*nodes, config, far(2)]:
        put(r)

    def rendered(line: str) -> bool:
        return any(line in p.read_text() for p in (tmp_path / "rr1").rglob("*.conf"))

    async def scenario(sock: Path) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_reflector(datastore, key_layout, "rr1", tmp_path / "rr1", resync=0.5,
                                                 netns=rr1, stop=stop, engine="bird"))
        try:
            await wait_for_async(lambda: rendered("  multihop 2;"), 15, "rr1's BIRD configured with multihop 2")
            # rr1 retries every CONNECT_RETRY_TIME (5 s); TTL 2 dies at hop2 every time
            await asyncio.sleep(2 * HOLD)
            assert not bird_established(sock, "rr1"), "TTL 2 cannot reach a router three hops away"
            t0 = time.monotonic()
            put(far(3))
            await wait_for_async(lambda: bird_established(sock, "rr1"), 30, "the session with ebgpMultihop 3")
            report(record_property, "bird_engine_multihop_session_up", time.monotonic() - t0)
            assert rendered("  multihop 3;")
        finally:
            stop.set()
            assert await task == 0

    with bird(fabric, tmp_path / "far", (), template=FAR_ROUTER_CONF, rr1=FAR_RR1, router=FAR_ROUTER) as sock:
        asyncio.run(scenario(sock))
