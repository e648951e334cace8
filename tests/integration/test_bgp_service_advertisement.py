"""Calico's BGP service advertisement end to end: agent calculation -> ExaBGP speakers -> BIRD -> BIRD's kernel.

Fabric and helpers come from ``tests.integration.bgp_fabric`` (one bridge, a namespace per router, pod
addresses on ``lo``). n1 and n2 are cluster nodes (mesh off) whose speakers peer with BIRD, a
route reflector that also writes its best routes into its own namespace's kernel. What each
speaker announces is exactly what ``felix.calc.compute`` puts in the desired state (as the agent
hands it over), from one model: the default BGPConfiguration's service CIDRs and a Service with
``externalTrafficPolicy: Local`` whose one pod lives on n1. Checked on BIRD's kernel: both nodes'
CIDRs, n1 alone for the Service's /32s, nothing for an address outside the CIDRs; a ping from the
BIRD namespace to the LoadBalancer IP reaches the pod through n1 (kube-proxy stood in for by one
DNAT rule); n2 learns n1's /32 but its calculation installs no route for it; deleting the pod
withdraws the /32s and keeps the CIDRs.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bgp.speaker import Speaker
from bgp.view import build_node_view
from felix.calc import Model, compute
from felix.desired import DesiredState
from felix.links import Link
from l3net import netns
from l3net.keys import KeyLayout
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document, workload_endpoint_name
from tests.builders import Upd
from tests.integration.bgp_fabric import ADDR, BASE_CFG, Fabric, bird, block, fabric, node_res, pod_ip
from tests.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.needs_root,
              pytest.mark.skipif(shutil.which("bird") is None, reason="needs bird2")]

__all__ = ["fabric"]

KEYS = KeyLayout("/svcadv/")
NODES = ("n1", "n2")
CLUSTER_CIDR, LB_CIDR = "10.96.0.0/12", "198.51.100.0/24"
CLUSTER_IP, LB_IP, OUTSIDE_IP = "10.96.0.10", "198.51.100.5", "203.0.113.9"
POD_IFACE = "caliweb1"

# BIRD reflects between the nodes and exports its BGP routes to its kernel (ECMP merged).
BIRD_KERNEL_CONF = """
router id {rr};
log stderr all;
protocol device {{ }}
protocol direct {{ ipv4; interface "eth0"; }}
protocol kernel {{ merge paths on; ipv4 {{ import none; export where source = RTS_BGP; }}; }}
template bgp rrc {{
  local {rr} as 64512;
  rr client;
  rr cluster id {rr};
  passive on;
  hold time {hold};
  ipv4 {{ import all; export where source = RTS_BGP; }};
}}
{clients}
"""

BGPCONF = Resource("BGPConfiguration", "default", {
    **BASE_CFG, "nodeToNodeMeshEnabled": False,
    "serviceClusterIPs": [{"cidr": CLUSTER_CIDR}], "serviceLoadBalancerIPs": [{"cidr": LB_CIDR}]})
PEERS = [Resource("BGPPeer", "bird-rr", {"peerIP": ADDR["bird"], "asNumber": 64512})]
SERVICE = Resource("Service", "web", {"clusterIP": CLUSTER_IP, "loadBalancerIPs": [LB_IP, OUTSIDE_IP],
                                      "externalTrafficPolicy": "Local", "selector": {"app": "web"}},
                   namespace="shop")
POD = Resource("WorkloadEndpoint", workload_endpoint_name("n1", "web-1", "eth0"),
               {"node": "n1", "orchestrator": "k8s", "pod": "web-1", "endpoint": "eth0",
                "ipNetworks": [f"{pod_ip('n1')}/32"], "interfaceName": POD_IFACE},
               namespace="shop", labels={"app": "web"})
# The pod's interface as the agent's link watcher would report it (its address sits on n1's lo).
LINKS = {POD_IFACE: Link(POD_IFACE, 99, True)}
DNAT = ["PREROUTING", "-d", f"{LB_IP}/32", "-j", "DNAT", "--to-destination", pod_ip("n1")]




def put(res: Resource) -> Upd:
    res = resource_from_document(res.to_document())  # validated, as every datastore write is
    return Upd(KEYS.resource(res.info.plural, res.name, res.namespace), res.to_json())


def gone(res: Resource) -> Upd:
    return Upd(KEYS.resource(res.info.plural, res.name, res.namespace), None)


def affinity(node: str) -> Upd:
    return Upd(KEYS.affinity(node, block(node)), json.dumps({"state": "confirmed"}).encode())


def bird_kernel(fabric: Fabric) -> dict[str, list[str]]:
    """BIRD's routes in its namespace's kernel: {prefix: [gateways]}."""
    out = netns.run(fabric.ns["bird"], ["ip", "-j", "route", "show", "proto", "bird"]).stdout
    routes: dict[str, list[str]] = {}
    for r in json.loads(out or "[]"):
        dst = r["dst"] if "/" in r["dst"] else f"{r['dst']}/32"
        hops = [r["gateway"]] if "gateway" in r else [h["gateway"] for h in r.get("nexthops", [])]
        routes[dst] = sorted(hops)
    return routes


def test_service_cidrs_and_a_local_lb_ip_reach_bird_and_traffic_reaches_the_pod(
        fabric: Fabric, tmp_path: Path, record_property: Any) -> None:
    model = Model(KEYS)
    model.apply([put(Resource("IPPool", "p", {"cidr": "10.244.0.0/16"})), put(BGPCONF), put(SERVICE), put(POD),
                 *(affinity(n) for n in NODES)])
    nodes = [node_res(n) for n in NODES]
    learned: dict[str, dict[str, list[str]]] = {n: {} for n in NODES}

    def desired(node: str) -> DesiredState:
        return compute(model, node, LINKS if node == "n1" else {}, learned[node], node_ips=[ADDR[node]])

    async def scenario() -> None:
        sp: dict[str, Speaker] = {}
        with bird(fabric, tmp_path / "bird", NODES, template=BIRD_KERNEL_CONF):
            try:
                for n in NODES:
                    sp[n] = Speaker(n, tmp_path / n, netns=fabric.ns[n], on_learned=learned[n].update,
                                    backoff=(0.3, 2.0))
                    await sp[n].start()
                    view = build_node_view(n, nodes, [BGPCONF], PEERS)
                    assert view.errors == (), view.errors
                    sp[n].set_view(view)

                def announce() -> None:
                    # what felix.main hands the speaker after each apply
                    for n in NODES:
                        sp[n].set_advertisements({a.prefix: None for a in desired(n).advertisements})

                announce()
                both, n1 = sorted([ADDR["n1"], ADDR["n2"]]), [ADDR["n1"]]

                def announced() -> bool:
                    k = bird_kernel(fabric)
                    return (k.get(f"{LB_IP}/32") == n1 and k.get(f"{CLUSTER_IP}/32") == n1
                            and bool(k.get(CLUSTER_CIDR)) and bool(k.get(LB_CIDR))
                            and block("n1") in k and block("n2") in k)

                seconds = await wait_for_async(announced, 60, "service prefixes in BIRD's kernel")
                record_property("service_prefixes_in_peer_kernel_s", round(seconds, 2))
                k = bird_kernel(fabric)
                assert set(k[CLUSTER_CIDR]) <= set(both) and set(k[LB_CIDR]) <= set(both), k
                assert f"{OUTSIDE_IP}/32" not in k, "an address outside the CIDRs is never announced"
                # BIRD's RIB holds both nodes' paths for the CIDR, n1's alone for the /32.
                sock = tmp_path / "bird" / "bird.ctl"
                rib = subprocess.run(["birdc", "-s", str(sock), "show", "route", "for", LB_IP, "all"],
                                     capture_output=True, text=True, timeout=10).stdout
                assert f"{LB_IP}/32" in rib and ADDR["n1"] in rib and ADDR["n2"] not in rib, rib

                # Real traffic: kube-proxy's DNAT on n1 (one rule), a ping from the peer to the LB IP.
                netns.run(fabric.ns["n1"], ["iptables-nft", "-t", "nat", "-A", *DNAT])
                try:
                    res = netns.run(fabric.ns["bird"], ["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2",
                                                        LB_IP], check=False, timeout=30)
                    assert res.returncode == 0, f"the LB IP must reach the pod behind it: {res.stdout}{res.stderr}"
                finally:
                    netns.run(fabric.ns["n1"], ["iptables-nft", "-t", "nat", "-D", *DNAT], check=False)

                # n2 learns n1's /32 (reflected) and routes nothing inside a service CIDR: kube-proxy's job.
                await wait_for_async(lambda: learned["n2"].get(f"{LB_IP}/32") == n1, 30, "n2 learns n1's LB /32")
                routes = {r.dst for r in desired("n2").routes}
                assert block("n1") in routes and not {f"{LB_IP}/32", f"{CLUSTER_IP}/32", CLUSTER_CIDR} & routes

                # The pod goes: the /32s are withdrawn from the peer, the CIDRs stay.
                t0 = time.monotonic()
                model.apply([gone(POD)])
                announce()
                await wait_for_async(lambda: f"{LB_IP}/32" not in bird_kernel(fabric)
                                     and f"{CLUSTER_IP}/32" not in bird_kernel(fabric), 30, "the /32s withdrawn")
                record_property("pod_deleted_to_withdrawn_s", round(time.monotonic() - t0, 2))
                k = bird_kernel(fabric)
                assert CLUSTER_CIDR in k and LB_CIDR in k, k
            finally:
                for s in sp.values():
                    await s.stop()

    asyncio.run(scenario())
