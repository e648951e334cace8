"""An external eBGP peer (FRR's bgpd) tries to hijack pod routes and floods junk; l3net's import policy holds.

Fabric and helpers come from ``tests.integration.bgp_fabric`` (one bridge, a namespace per router, a kernel
route consumer per node, pod addresses on ``lo``). n1 and n2 are cluster nodes in AS 65001
(iBGP mesh); n1 also peers with FRR (AS 65000), which announces a default route, a
more-specific of n2's block (10.244.2.0/27), n2's pod /32 (10.244.2.1/32) and 20,000 junk
/24s. Three phases, each against real BGP messages and n1's real kernel routes:

1. a BGPFilter rejects the junk: the default route is installed, neither hijack is (they are
   held by the pool defaults), and n1's pod reaches n2's pod through n2;
2. no filter: the junk exceeds the peer's prefix limit (maxPrefixes 15,000): no route of FRR
   is used any more, the limit is logged and counted, pod traffic still flows;
3. a BGPFilter that accepts only the default route: exactly that route is installed (from the
   paths n1 held: soft reconfiguration, no help from FRR needed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from bgp.speaker import Speaker
from bgp.view import IpamFacts, build_node_view
from l3net import netns
from l3net.model.resource import Resource
from tests.integration.bgp_fabric import ADDR, HOLD, Fabric, block, fabric, pod_ip
from tests.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.needs_root,
              pytest.mark.skipif(not Path("/usr/lib/frr/bgpd").exists(), reason="needs frr (Debian package)")]

__all__ = ["fabric"]

JUNK = 20_000
# Below the junk, and at least half of all FRR sends: the Rib keeps refused paths up to twice the
# limit, so every phase works from what n1 holds (FRR 8.4 did not answer our ROUTE-REFRESH here).
LIMIT = 15_000
POOL = "10.244.0.0/16"
HIJACKS = ("10.244.2.0/27", f"{pod_ip('n2')}/32")
DEFAULT = "0.0.0.0/0"
FRR_AS, CLUSTER_AS = 65000, 65001
PEER_NAME = "Node_" + ADDR["frr"].replace(".", "_")


def junk() -> list[str]:
    return [f"20.{i // 256}.{i % 256}.0/24" for i in range(JUNK)]


def frr_conf() -> str:
    nets = "\n".join(f"  network {p}" for p in (DEFAULT, *HIJACKS, *junk()))
    return f"""
hostname frrhijack
log stdout informational
router bgp {FRR_AS}
 bgp router-id {ADDR['frr']}
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor {ADDR['n1']} remote-as {CLUSTER_AS}
 neighbor {ADDR['n1']} timers 2 {HOLD}
 address-family ipv4 unicast
{nets}
 exit-address-family
"""


NODES = [Resource("Node", n, {"bgp": {"ipv4Address": f"{ADDR[n]}/24", "asNumber": CLUSTER_AS}}) for n in ("n1", "n2")]
CFGS = [Resource("BGPConfiguration", "default", {"holdTime": f"{HOLD}s", "gracefulRestart": False})]
IPAM = IpamFacts(pools=(POOL,), block_owner=((block("n1"), "n1"), (block("n2"), "n2")),
                 address_owner=frozenset({(f"{pod_ip('n1')}/32", "n1"), (f"{pod_ip('n2')}/32", "n2")}))
REJECT_JUNK = Resource("BGPFilter", "no-junk", {"importV4": [
    {"cidr": "20.0.0.0/8", "matchOperator": "In", "action": "Reject"}]})
ONLY_DEFAULT = Resource("BGPFilter", "only-default", {"importV4": [
    {"cidr": DEFAULT, "matchOperator": "Equal", "action": "Accept"}, {"action": "Reject"}]})


def tor(*filters: str) -> Resource:
    spec: dict[str, Any] = {"node": "n1", "peerIP": ADDR["frr"], "asNumber": FRR_AS, "maxPrefixes": LIMIT}
    if filters:
        spec["filters"] = list(filters)
    return Resource("BGPPeer", "tor", spec)


def view(node: str, peers: list[Resource], filters: list[Resource]) -> Any:
    v = build_node_view(node, NODES, CFGS, peers, filters, ipam=IPAM)
    assert v.errors == (), v.errors
    return v


def limit_hits() -> float:
    return REGISTRY.get_sample_value("l3net_bgp_prefix_limit_exceeded_total",
                                     {"node": "n1", "peer": PEER_NAME}) or 0.0


def test_frr_cannot_hijack_pods_or_flood_and_a_filter_admits_exactly_the_default(
        fabric: Fabric, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        record_property: Any) -> None:
    run = tmp_path / "frr"
    run.mkdir()
    (run / "bgpd.conf").write_text(frr_conf())
    os.chmod(run, 0o777)
    cmd = ["/usr/lib/frr/bgpd", "-f", str(run / "bgpd.conf"), "-i", str(run / "bgpd.pid"), "-Z", "-S",
           "--vty_socket", str(run), "-P", "0", "-l", ADDR["frr"]]
    proc = subprocess.Popen(netns.nsenter_cmd(fabric.ns["frr"], cmd), stdout=open(run / "bgpd.log", "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True)
    fabric.factory.pids.append(proc.pid)
    caplog.set_level(logging.WARNING, logger="bgp")

    async def scenario() -> None:
        sp: dict[str, Speaker] = {}
        try:
            for n in ("n1", "n2"):
                sp[n] = Speaker(n, tmp_path / n, netns=fabric.ns[n], on_learned=fabric.installer(n),
                                backoff=(0.3, 2.0))
                await sp[n].start()
                sp[n].set_view(view(n, [tor("no-junk")], [REJECT_JUNK]))
                sp[n].set_advertisements({block(n): None})
            frr = ADDR["frr"]

            # 1. junk filtered: the default route is in, the hijacks are held, pods talk through n2
            t0 = time.monotonic()
            want = {block("n2"): [ADDR["n2"]], DEFAULT: [frr]}
            await wait_for_async(lambda: fabric.kernel_routes("n1") == want, 120, f"n1's kernel routes == {want}")
            record_property("phase1_seconds", round(time.monotonic() - t0, 2))
            # everything FRR sent is held (kept unused, for re-checks) up to twice the limit: the hijacks
            # (refused by the pool defaults) and the junk (refused by the filter)
            await wait_for_async(lambda: sp["n1"].rib.held(frr) == JUNK + len(HIJACKS), 60, "FRR's refused paths held")
            assert all(p.peer == ADDR["n2"] for p in sp["n1"].rib.candidates(block("n2")))
            assert sp["n1"].rib.received(frr) == 1 and limit_hits() == 0
            assert not any(p.peer == frr for h in HIJACKS for p in sp["n1"].rib.candidates(h))
            row = next(r for r in sp["n1"].peer_status() if r.address == frr)
            assert row.refused == JUNK + len(HIJACKS) and row.received == 1
            assert fabric.ping("n1", "n2", count=3).returncode == 0, "n1's pod must reach n2's pod"

            # 2. no filter: 20,000 junk prefixes exceed the default limit; FRR's routes all go
            t0 = time.monotonic()
            sp["n1"].set_view(view("n1", [tor()], []))
            await wait_for_async(lambda: frr in sp["n1"].rib.over_limit, 60, "FRR over its prefix limit")
            await wait_for_async(lambda: fabric.kernel_routes("n1") == {block("n2"): [ADDR["n2"]]}, 60,
                           "only n2's block left in n1's kernel")
            record_property("phase2_seconds", round(time.monotonic() - t0, 2))
            assert sp["n1"].rib.over_limit[frr] == LIMIT
            assert limit_hits() >= 1
            assert "prefix limit exceeded" in caplog.text and PEER_NAME in caplog.text
            assert sp["n1"].rib.received(frr) == 0
            assert fabric.ping("n1", "n2", count=3).returncode == 0, "pod traffic unaffected by the flood"

            # 3. accept only the default route: exactly that one comes back (route refresh)
            t0 = time.monotonic()
            sp["n1"].set_view(view("n1", [tor("only-default")], [ONLY_DEFAULT]))
            want = {block("n2"): [ADDR["n2"]], DEFAULT: [frr]}
            await wait_for_async(lambda: fabric.kernel_routes("n1") == want, 180, f"n1's kernel routes == {want}")
            record_property("phase3_seconds", round(time.monotonic() - t0, 2))
            await asyncio.sleep(1.0)   # the refresh is complete once the counts settle; nothing else comes in
            assert fabric.kernel_routes("n1") == want
            assert sp["n1"].rib.received(frr) == 1 and frr not in sp["n1"].rib.over_limit
            assert fabric.ping("n1", "n2", count=3).returncode == 0
        finally:
            for s in sp.values():
                await s.stop()
            for n in sp:
                fabric.installer(n)({})
            proc.terminate()
            proc.wait(10)

    asyncio.run(scenario())
