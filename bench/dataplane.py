"""bench.dataplane: throughput and latency between workloads on two nodes, side by side.

Paths, all between the same two node namespaces, in one run:
  direct        node n1 -> node n2 over the fabric (the limit: no workload hop)
  routed        workload -> workload, l3net's wiring (cali veth, /32, proxy ARP, plain routes, no encap)
  vxlan         workload -> workload over a VXLAN device between the nodes, workloads at MTU 1450
                (what Flannel and Calico's VXLAN mode do)
  routed+pol    routed, with 100 NetworkPolicies selecting the pair, compiled by policy.compiler and
                applied by felix's iptables/ipsets drivers on both nodes
each with TSO/GSO/GRO on and off on every veth. iperf3 TCP with 1 and 4 streams, ping RTT and a UDP
request/response RTT; rounds interleave every path so drift lands on all alike.
"""

from __future__ import annotations

import json
import logging
import os
import time

from bench import policyload, topology
from bench.framework import (
    Context,
    Result,
    Unavailable,
    interleaved,
    need_binary,
    need_root,
    percentile,
    python_exe,
    tool_version,
)
from l3net import netns

_log = logging.getLogger(__name__)

NAME = "dataplane"
TITLE = "iperf3 TCP and RTT: l3net routed vs node-direct vs VXLAN, offloads on/off, with 100 policies"
NEEDS = ["root", "iperf3", "ethtool", "ping", "iptables-restore + ipset (for routed+pol)"]

UDP_PORT = 7777
POLICIES = 100
TARGETS_ON = {"routed/direct": 0.97, "routed/vxlan": 1.10, "routed+pol/routed": 0.95}
TARGETS_OFF = {"routed/direct": 0.97, "routed/vxlan": 1.35, "routed+pol/routed": 0.95}


class Topo:
    """The two nodes, the three workload pairs and the servers listening in them."""

    def __init__(self, ctx: Context) -> None:
        ws = ctx.workspace
        self.ws = ws
        self.n1, self.n2 = topology.node_pair(ws)
        # routed pair and policy pair share the nodes' blocks; the VXLAN pair has its own blocks
        self.w1 = topology.wire_workload(ws, self.n1, "w1", "10.244.1.2")
        self.w2 = topology.wire_workload(ws, self.n2, "w2", "10.244.2.2")
        self.p1 = topology.wire_workload(ws, self.n1, "p1", "10.244.1.3")
        self.p2 = topology.wire_workload(ws, self.n2, "p2", "10.244.2.3")
        self.v1 = topology.wire_workload(ws, self.n1, "v1", "10.245.1.2", mtu=1450)
        self.v2 = topology.wire_workload(ws, self.n2, "v2", "10.245.2.2", mtu=1450)
        topology.route_block(self.n1, "10.244.1.0/26", "10.244.2.0/26", self.n2.fabric_ip)
        topology.route_block(self.n2, "10.244.2.0/26", "10.244.1.0/26", self.n1.fabric_ip)
        vx = topology.vxlan_pair(self.n1, self.n2)
        topology.route_block(self.n1, "10.245.1.0/26", "10.245.2.0/26", vx["n2"], dev="vxlan0")
        topology.route_block(self.n2, "10.245.2.0/26", "10.245.1.0/26", vx["n1"], dev="vxlan0")
        # every veth end: the fabric ends, the cali ends, and each workload's eth0
        self.veths: list[tuple[str, str]] = [(n.ns, v) for n in (self.n1, self.n2) for v in n.veths]
        self.veths += [(w.ns, "eth0") for w in (self.w1, self.w2, self.p1, self.p2, self.v1, self.v2)]

    def paths(self) -> dict[str, tuple[str, str, str]]:
        """path name -> (client namespace, server namespace, server address)."""
        return {
            "direct": (self.n1.ns, self.n2.ns, self.n2.fabric_ip),
            "routed": (self.w1.ns, self.w2.ns, self.w2.ip),
            "vxlan": (self.v1.ns, self.v2.ns, self.v2.ip),
            "routed+pol": (self.p1.ns, self.p2.ns, self.p2.ip),
        }

    def set_offloads(self, on: bool) -> None:
        for ns, dev in self.veths:
            topology.set_offloads(ns, dev, on)


def _iperf(client_ns: str, addr: str, seconds: int, streams: int) -> float:
    """One iperf3 TCP run; received Gbit/s."""
    cmd = ["iperf3", "-c", addr, "-t", str(seconds), "-P", str(streams), "-J"]
    last = ""
    for _attempt in range(5):  # the server may still be starting
        out = netns.run(client_ns, cmd, check=False, timeout=seconds + 30)
        if out.returncode == 0:
            data = json.loads(out.stdout)
            return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9
        last = (out.stdout[-300:] + out.stderr[-300:]).strip()
        time.sleep(0.3)
    raise RuntimeError(f"iperf3 -c {addr} from {client_ns} kept failing: {last}")


def _ping(client_ns: str, addr: str, count: int) -> list[float]:
    """Per-packet RTTs in microseconds (the first one, which resolves neighbours, is dropped)."""
    out = netns.run(client_ns, ["ping", "-n", "-c", str(count + 1), "-i", "0.002", "-W", "1", addr],
                    check=False, timeout=60)
    rtts = [float(tok.split("=", 1)[1]) * 1000 for line in out.stdout.splitlines()
            for tok in line.split() if tok.startswith("time=")]
    if len(rtts) < max(2, count // 2):
        raise RuntimeError(f"ping {addr} from {client_ns}: {len(rtts)} of {count + 1} replies\n{out.stdout[-500:]}")
    return rtts[1:]


def _udp_rtts(client_ns: str, addr: str, count: int) -> list[float]:
    env = dict(os.environ, PYTHONPATH=_repo_root())
    out = netns.run(client_ns, [python_exe(), "-m", "bench.udpecho", "client", addr, str(UDP_PORT), str(count)],
                    check=False, timeout=120, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"udp echo client to {addr} failed: {out.stderr[-500:]}")
    rtts = json.loads(out.stdout)
    if len(rtts) < count // 2:
        raise RuntimeError(f"udp echo to {addr}: only {len(rtts)} of {count} answers")
    return rtts


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start_servers(ctx: Context, topo: Topo, paths: dict[str, tuple[str, str, str]]) -> None:
    env = dict(os.environ, PYTHONPATH=_repo_root())
    for _client, server_ns, _addr in paths.values():
        ctx.workspace.spawn(["iperf3", "-s"], netns_name=server_ns)
        ctx.workspace.spawn([python_exe(), "-m", "bench.udpecho", "server", str(UDP_PORT)], netns_name=server_ns,
                            env=env)
    time.sleep(0.5)


def run(ctx: Context) -> Result:
    need_root()
    for binary in ("iperf3", "ethtool", "ping"):
        need_binary(binary)
    res = Result(NAME, TITLE, ctx.quick)
    seconds = ctx.size(3, 1)
    rounds = ctx.size(3, 1)
    pings = ctx.size(200, 20)
    udps = ctx.size(500, 30)
    stream_counts = (1, 4)
    topo = Topo(ctx)
    paths = topo.paths()
    res.setup.update({
        "wiring": "direct (bench.topology, the same steps as l3net-cni: cali veth, /32, 169.254.1.1, proxy_arp, "
                  "proxy_delay=0, scope-link host route proto 76, no encapsulation)",
        "fabric": "one veth pair between the two node namespaces, 10.99.0.0/24",
        "vxlan": "vxlan0 id 4242 point-to-point over the fabric, dstport 4789, workloads and their veths at MTU 1450",
        "offloads_off": "ethtool -K <veth> tso off gso off gro off on every veth end (fabric, cali*, workload eth0)",
        "iperf3": {"seconds": seconds, "streams": list(stream_counts), "version": tool_version(["iperf3", "-v"])},
        "rounds": rounds, "pings_per_round": pings, "udp_requests_per_round": udps,
        "udp_rtt": "python request/response (bench/udpecho.py); same interpreter cost on every path",
    })
    try:
        # The only piece routed+pol may lack on a machine is the external iptables/ipset tooling.
        for binary in ("iptables-restore", "iptables-save", "ipset"):
            need_binary(binary)
    except Unavailable as exc:
        res.missing("routed+pol", exc)
        del paths["routed+pol"]
    else:
        res.setup["policy"] = policyload.install_dataplane_policies(ctx.workspace, topo.n1, topo.p1, topo.n2, topo.p2,
                                                                    count=POLICIES,
                                                                    others=[topo.w1, topo.w2, topo.v1, topo.v2])
    _start_servers(ctx, topo, paths)

    for rnd, offload in interleaved(rounds, ["on", "off"]):
        topo.set_offloads(offload == "on")
        for streams, path in [(s, p) for s in stream_counts for p in _rotate(paths, rnd)]:
            client_ns, _server_ns, addr = paths[path]
            gbps = _iperf(client_ns, addr, seconds, streams)
            res.sample(f"tcp_{streams}stream_offload_{offload}", path, gbps, unit="Gbit/s")
            _log.info("iperf3 round=%d offload=%s streams=%d path=%s gbps=%.2f", rnd, offload, streams, path, gbps)
        for path in _rotate(paths, rnd):
            client_ns, _server_ns, addr = paths[path]
            res.sample(f"ping_rtt_p50_offload_{offload}", path, percentile(_ping(client_ns, addr, pings), 50),
                       unit="us", better="lower")
            udp = _udp_rtts(client_ns, addr, udps)
            res.sample(f"udp_rtt_p50_offload_{offload}", path, percentile(udp, 50), unit="us", better="lower")
            res.sample(f"udp_rtt_p99_offload_{offload}", path, percentile(udp, 99), unit="us", better="lower")
    topo.set_offloads(True)

    for offload, targets in (("on", TARGETS_ON), ("off", TARGETS_OFF)):
        for streams in stream_counts:
            metric = f"tcp_{streams}stream_offload_{offload}"
            tag = f"tcp{streams} offload {offload}"
            res.ratio(f"routed/direct {tag}", metric, "routed", "direct", op=">=", threshold=targets["routed/direct"])
            res.ratio(f"routed/vxlan {tag}", metric, "routed", "vxlan", op=">=", threshold=targets["routed/vxlan"])
            if "routed+pol" in paths:
                res.ratio(f"routed+pol/routed {tag}", metric, "routed+pol", "routed", op=">=",
                          threshold=targets["routed+pol/routed"], note=f"policy cost <= 5 % with {POLICIES} policies")
        for lat in ("ping_rtt_p50", "udp_rtt_p50"):
            metric = f"{lat}_offload_{offload}"
            res.ratio(f"{lat} routed/direct offload {offload}", metric, "routed", "direct",
                      note="latency: lower is better, 1.0 means no added cost")
            res.ratio(f"{lat} vxlan/routed offload {offload}", metric, "vxlan", "routed")
    return res


def _rotate(paths: dict[str, tuple[str, str, str]], k: int) -> list[str]:
    names = list(paths)
    k %= len(names)
    return names[k:] + names[:k]
