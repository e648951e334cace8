"""The dataplane benchmark's topology, checked on real namespaces (no timing asserted).

- the bench mirror of the CNI wiring passes l3net-cni's own drift check (``l3net.cni.dataplane.check``),
  so the "routed" path really is what the plugin builds;
- the VXLAN leg is set up as Flannel's vxlan backend does it (VNI 1, port 8472, nolearning,
  MTU uplink - 50, static FDB + ARP per peer) and carries workload traffic;
- the offload modes touch exactly the devices they claim, the same set for every path, and
  "on" puts back the defaults;
- the routed-bare pair is wired the same way on host veths outside felix's ``cali+``, carries traffic,
  and its packets match none of the l3n- rules while the routed pair's do.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import policyload, topology
from bench.conn_rate import rule_matches, tracked_connections
from bench.dataplane import MODES, Topo
from bench.framework import Context, Workspace
from l3net import netns
from l3net.cni import dataplane as cni

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topo]:
    ws = Workspace()
    try:
        yield Topo(Context(quick=True, results_dir=Path(tmp_path_factory.mktemp("dp")), workspace=ws))
    finally:
        ws.close()


def _link(ns: str, dev: str) -> dict:
    out = subprocess.run(["ip", "-n", ns, "-j", "-d", "-s", "link", "show", dev], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)[0]


def test_routed_wiring_passes_the_cni_drift_check(topo: Topo) -> None:
    for wl in (topo.w1, topo.w2, topo.p1, topo.p2, topo.v1, topo.v2, topo.b1, topo.b2):
        with netns.in_netns(wl.node.ns):
            drift = cni.check(wl.host_if, netns.netns_path(wl.ns), "eth0", [wl.ip])
        assert drift == [], f"{wl.name}: {drift}"
    routes = json.loads(topology.ip(topo.n1.ns, "-j", "route", "show", f"{topo.w1.ip}/32").stdout)
    assert routes and routes[0]["dev"] == topo.w1.host_if and routes[0]["metric"] == 1024


def test_vxlan_is_wired_as_flannel_does_it(topo: Topo) -> None:
    for me, peer in ((topo.n1, topo.n2), (topo.n2, topo.n1)):
        info = _link(me.ns, "vxlan0")
        data = info["linkinfo"]["info_data"]
        assert (data["id"], data["port"], data["learning"]) == (1, 8472, False)
        assert "remote" not in data and info["mtu"] == 1450
        peer_mac = _link(peer.ns, "vxlan0")["address"]
        fdb = subprocess.run(["bridge", "-n", me.ns, "-j", "fdb", "show", "dev", "vxlan0"], capture_output=True,
                             text=True, check=True)
        assert any(e["mac"] == peer_mac and e.get("dst") == peer.fabric_ip for e in json.loads(fdb.stdout))
    before = _link(topo.n1.ns, "vxlan0")["stats64"]["tx"]["packets"]
    out = netns.run(topo.v1.ns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", topo.v2.ip], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert _link(topo.n1.ns, "vxlan0")["stats64"]["tx"]["packets"] >= before + 3


def test_offload_modes_touch_the_same_devices_for_every_path(topo: Topo) -> None:
    every = topo.nic + topo.soft
    assert {dev for _ns, dev in topo.nic} == {"eth0"} and len(topo.nic) == 2
    # every path's devices are in the set: fabric, each pair's cali veths and eth0s, vxlan0
    for wl in (topo.w1, topo.w2, topo.p1, topo.p2, topo.v1, topo.v2, topo.b1, topo.b2):
        assert (wl.node.ns, wl.host_if) in topo.soft and (wl.ns, "eth0") in topo.soft
    assert (topo.n1.ns, "vxlan0") in topo.soft and (topo.n2.ns, "vxlan0") in topo.soft
    defaults = {dev: topology.get_offloads(*dev) for dev in topo.soft}
    try:
        for mode in MODES:
            topo.set_mode(mode)
            for dev in every:
                state = topology.get_offloads(*dev)
                if mode == "off" or (mode == "nicoff" and dev in topo.nic):
                    assert not any(state.values()), f"{mode}: {dev} still has {state}"
                elif dev in topo.nic:
                    assert all(state.values()), f"{mode}: NIC {dev} should have offloads on: {state}"
                else:
                    assert state == defaults[dev], f"{mode}: {dev} not at its defaults"
    finally:
        topo.set_mode("on")
    with pytest.raises(ValueError, match="offload mode"):
        topo.set_mode("half")


def test_the_bare_pair_takes_the_same_route_and_none_of_felix_rules(topo: Topo) -> None:
    assert topo.b1.host_if.startswith("bare") and len(topo.b1.host_if) == len(topo.w1.host_if)
    policyload.install_dataplane_policies(topo.ws, topo.n1, topo.p1, topo.n2, topo.p2, count=2,
                                          others=[topo.w1, topo.w2, topo.v1, topo.v2])
    before = rule_matches(topo.n1.ns)
    out = netns.run(topo.b1.ns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", topo.b2.ip], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert rule_matches(topo.n1.ns) == before, "a felix rule matched the bare pair's packets"
    assert tracked_connections(topo.n1.ns) > 0, "the bare pair's flow is not tracked"
    out = netns.run(topo.w1.ns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", topo.w2.ip], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert rule_matches(topo.n1.ns) > before, "the routed pair's packets should walk felix's rules"
