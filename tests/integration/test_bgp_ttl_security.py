"""BGPPeer ``ttlSecurity`` (GTSM, RFC 5082) on the wire: an l3net ExaBGP speaker and BIRD running GTSM.

Node n1's speaker has two iBGP peers on one BIRD: ``near`` on the fabric's link (one hop) and ``far``
two hops away (n1 - hop1 - BIRD, hop1 forwarding). Both sides send with TTL 255; BIRD is passive, so n1 opens
every connection, and BIRD accepts the far session from two hops (``ttl security on; multihop 2``): the only
check that can keep a session down is the one ``ttlSecurity`` puts on n1's socket (IP_MINTTL = 256 - hops).

- ttlSecurity 1: the near session comes up (TTL 255 arrives); the far one stays down, BIRD's SYN-ACK arrives
  with 254 and n1's kernel drops it; BIRD never gets past connecting (no Established, no ``up`` in its log).
- ttlSecurity 2 on the far peer (a reload of n1's ExaBGP): the far session comes up.

iBGP, because the view refuses a routed eBGP peer without ``ebgpMultihop``, and ``ebgpMultihop`` would set the
TTL n1 sends with (``outgoing-ttl``) instead of GTSM's 255.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from bgp.bird_control import BirdError, command
from bgp.view import build_node_view
from l3net import netns
from l3net.model.resource import Resource
from tests.integration.bgp_fabric import ADDR, HOLD, Fabric, Nodes, bird, bird_established, fabric, node_res, report
from tests.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.needs_root,
              pytest.mark.skipif(shutil.which("bird") is None, reason="needs bird2")]

__all__ = ["fabric"]  # the module-scoped fixture of tests.integration.bgp_fabric

# n1 (10.88.1.1) - (10.88.1.2) hop1 (10.88.2.2) - (10.88.2.20) BIRD
N1_FAR, HOP1_N1, HOP1_BIRD, BIRD_FAR = "10.88.1.1", "10.88.1.2", "10.88.2.2", "10.88.2.20"
NOT_UP_WINDOW = 8.0   # seconds the far session is given to (wrongly) come up: several of ExaBGP's connect attempts

GTSM_ROUTER = """
router id {rr};
log stderr all;
protocol device {{ }}
protocol bgp near {{
  local {rr} as 64512;
  neighbor {n1} as 64512;
  ttl security on;
  multihop 1;
  passive on;
  hold time {hold};
  debug {{ states }};
  ipv4 {{ import all; export none; }};
}}
protocol bgp far {{
  local {bird_far} as 64512;
  neighbor {n1_far} as 64512;
  ttl security on;
  multihop 2;
  passive on;
  hold time {hold};
  debug {{ states }};
  ipv4 {{ import all; export none; }};
}}
{clients}
"""


def bird_show(sock: Path, name: str) -> str:
    try:
        return "\n".join(t for _, t in command(sock, f"show protocols all {name}"))
    except BirdError as e:
        return f"(BIRD: {e})"


def min_ttl_drops(ns: str) -> int:
    """The namespace's TcpExtTCPMinTTLDrop: TCP segments its kernel dropped for a TTL below a socket's IP_MINTTL."""
    lines = [ln.split() for ln in netns.run(ns, ["cat", "/proc/net/netstat"]).stdout.splitlines()]
    names, values = (ln for ln in lines if ln and ln[0] == "TcpExt:")
    return int(dict(zip(names, values, strict=True))["TCPMinTTLDrop"])


def two_hops(fabric: Fabric) -> None:
    """hop1 between n1 and BIRD on links of their own; each end routes the other's link through hop1."""
    hop1, n1, router = fabric.factory("hop1"), fabric.ns["n1"], fabric.ns["bird"]
    for a_ns, a_if, a_ip, b_ns, b_if, b_ip in ((n1, "gt0", N1_FAR, hop1, "gt0", HOP1_N1),
                                               (hop1, "gt1", HOP1_BIRD, router, "gt1", BIRD_FAR)):
        fabric.factory.veth(a_ns, a_if, b_ns, b_if)
        netns.run(a_ns, ["ip", "addr", "add", f"{a_ip}/24", "dev", a_if])
        netns.run(b_ns, ["ip", "addr", "add", f"{b_ip}/24", "dev", b_if])
    netns.write_sysctl("net.ipv4.ip_forward", 1, hop1)
    netns.run(n1, ["ip", "route", "add", "10.88.2.0/24", "via", HOP1_N1])
    netns.run(router, ["ip", "route", "add", "10.88.1.0/24", "via", HOP1_BIRD])


def test_ttl_security_is_gtsm_on_the_wire(fabric: Fabric, tmp_path: Path, record_property) -> None:
    two_hops(fabric)
    nodes = [node_res("n1")]
    cfgs = [Resource("BGPConfiguration", "default", {"holdTime": f"{HOLD}s", "gracefulRestart": False,
                                                     "nodeToNodeMeshEnabled": False})]
    near = Resource("BGPPeer", "near", {"node": "n1", "peerIP": ADDR["bird"], "asNumber": 64512, "ttlSecurity": 1})

    def far(hops: int) -> Resource:
        # sourceAddress None: the kernel sources n1's packets from 10.88.1.1, the address BIRD knows on that side
        return Resource("BGPPeer", "far", {"node": "n1", "peerIP": BIRD_FAR, "asNumber": 64512,
                                           "ttlSecurity": hops, "sourceAddress": "None"})

    log = tmp_path / "bird" / "bird.log"

    async def scenario(sock: Path) -> None:
        ns = Nodes(fabric, tmp_path / "n1")
        try:
            await ns.start(("n1",), nodes, cfgs, [near, far(1)])
            sp = ns.sp["n1"]

            def state(addr: str) -> str | None:
                return next((r.state for r in sp.peer_status() if r.address == addr), None)

            # one hop: TTL 255 arrives, ttlSecurity 1 accepts it
            await wait_for_async(lambda: state(ADDR["bird"]) == "up" and bird_established(sock, "near"), 20,
                                 "the directly connected GTSM session (ttlSecurity 1)")
            # two hops with ttlSecurity 1: whatever BIRD sends arrives with 254, below n1's minimum of 255
            t0 = time.monotonic()
            while time.monotonic() - t0 < NOT_UP_WINDOW:
                assert state(BIRD_FAR) != "up", "ttlSecurity 1 let a peer two hops away in"
                assert not bird_established(sock, "far"), f"BIRD established from two hops:\n{bird_show(sock, 'far')}"
                await asyncio.sleep(0.2)
            # down because n1's kernel dropped what came back for its TTL (n1 kept trying), not for want of trying
            assert min_ttl_drops(fabric.ns["n1"]) > 0, "no segment dropped for its TTL at n1"
            assert "far: State changed to up" not in log.read_text()
            assert "near: State changed to up" in log.read_text()   # the log shows an up when there is one

            # ttlSecurity 2: the minimum is 254, the far session comes up
            t0 = time.monotonic()
            sp.set_view(build_node_view("n1", nodes, cfgs, [near, far(2)]))
            await wait_for_async(lambda: state(BIRD_FAR) == "up" and bird_established(sock, "far"), 30,
                                 "the GTSM session two hops away with ttlSecurity 2")
            report(record_property, "gtsm_two_hops_session_up", time.monotonic() - t0)
            assert state(ADDR["bird"]) == "up" and bird_established(sock, "near")
            # last, so that the checks above are what the wire does, whatever was rendered
            conf = "\n".join(p.read_text() for p in (tmp_path / "n1").rglob("*.conf"))
            assert conf.count("incoming-ttl 255;") == 1 and conf.count("incoming-ttl 254;") == 1, conf
        finally:
            await ns.stop()

    with bird(fabric, tmp_path / "bird", (), template=GTSM_ROUTER, n1=ADDR["n1"], bird_far=BIRD_FAR,
              n1_far=N1_FAR) as sock:
        asyncio.run(scenario(sock))
