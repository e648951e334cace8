"""bench.dataplane: throughput and latency between workloads on two nodes, side by side.

Paths, all between the same two node namespaces, in one run:
  direct        node n1 -> node n2 over the fabric (the limit: no workload hop)
  routed        workload -> workload, l3net's wiring (cali veth, /32, proxy ARP, plain routes, no encap)
  vxlan         workload -> workload over a VXLAN device between the nodes, workloads at MTU 1450
                (what Flannel and Calico's VXLAN mode do)
  routed+pol    routed, with 100 NetworkPolicies selecting the pair, compiled by policy.compiler and
                applied by felix's iptables/ipsets drivers on both nodes
  routed-bare   routed, on host veths outside felix's interface prefix: the same wiring, routes and
                connection tracking (the nodes track every connection once felix's rules are loaded),
                none of felix's rules (raw reverse-path check, dispatch, endpoint chains), so
                routed/routed-bare is what felix's per-packet rule walk costs
in three offload modes, applied to the same set of devices for every path:
  on            kernel defaults on the software devices (as the CNI and the overlay leave them) and
                TSO/GSO/GRO on on the fabric, as on a real NIC
  off           TSO/GSO/GRO off on every device any path crosses: the fabric ends, every cali veth, every
                workload eth0 and vxlan0 -- every hop handles every MTU-sized packet (pure per-packet cost)
  nicoff        TSO/GSO/GRO off on the fabric only (a NIC without offloads); the software devices a CNI
                creates (veths, vxlan0) keep their defaults. TCP only, reported without a target.
iperf3 TCP with 1 and 4 streams (4 iperf3 processes of one stream each), ping RTT and a UDP
request/response RTT (modes on and off); rounds interleave every path and mode so drift lands on all
alike. No CPU pinning for any path.
Verdicts: the median of per-round paired ratios over 10 rounds (bench.stats), spread shown. The
routed+pol/routed ratios carry no target: after a flow's first packet conntrack answers, so
throughput cannot see policy; bench.conn_rate measures its cost per new connection.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
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
BARE_PREFIX = "bare"  # the routed-bare pair's host veths: not felix's "cali", so none of its rules match them
MODES = ("on", "off", "nicoff")
STREAMS = (1, 4)
# (offload mode, TCP streams) -> ratio -> target. Issue 8: routed >= 0.97 x direct, >= 1.10 x VXLAN with
# offloads on and >= 1.35 x with them off; issue 18 sets four streams with offloads on to >= 0.90 x direct.
TARGETS: dict[tuple[str, int], dict[str, float]] = {
    ("on", 1): {"routed/direct": 0.97, "routed/vxlan": 1.10},
    ("on", 4): {"routed/direct": 0.90, "routed/vxlan": 1.10},
    ("off", 1): {"routed/direct": 0.97, "routed/vxlan": 1.35},
    ("off", 4): {"routed/direct": 0.97, "routed/vxlan": 1.35},
}


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
        self.b1 = topology.wire_workload(ws, self.n1, "b1", "10.244.1.4", host_prefix=BARE_PREFIX)
        self.b2 = topology.wire_workload(ws, self.n2, "b2", "10.244.2.4", host_prefix=BARE_PREFIX)
        self.v1 = topology.wire_workload(ws, self.n1, "v1", "10.245.1.2", mtu=1450)
        self.v2 = topology.wire_workload(ws, self.n2, "v2", "10.245.2.2", mtu=1450)
        topology.route_block(self.n1, "10.244.1.0/26", "10.244.2.0/26", self.n2.fabric_ip)
        topology.route_block(self.n2, "10.244.2.0/26", "10.244.1.0/26", self.n1.fabric_ip)
        vx = topology.vxlan_pair(self.n1, self.n2, uplink_mtu=1500)
        topology.route_block(self.n1, "10.245.1.0/26", "10.245.2.0/26", vx["n2"], dev="vxlan0")
        topology.route_block(self.n2, "10.245.2.0/26", "10.245.1.0/26", vx["n1"], dev="vxlan0")
        # The fabric stands in for the NIC; everything else is a software device the CNI or overlay makes.
        self.nic: list[tuple[str, str]] = [(n.ns, "eth0") for n in (self.n1, self.n2)]
        self.soft: list[tuple[str, str]] = [(n.ns, v) for n in (self.n1, self.n2) for v in n.veths if v != "eth0"]
        self.soft += [(w.ns, "eth0") for w in (self.w1, self.w2, self.p1, self.p2, self.v1, self.v2, self.b1,
                                               self.b2)]
        self.soft += [(n.ns, "vxlan0") for n in (self.n1, self.n2)]
        # "on" is what the CNI leaves (kernel defaults: veths come up with GRO off) and, for the fabric, what
        # a real NIC defaults to (TSO, GSO and GRO on).
        self._defaults = {dev: topology.get_offloads(*dev) for dev in self.soft}
        self._defaults.update({dev: dict.fromkeys(topology.OFFLOADS, True) for dev in self.nic})

    def paths(self) -> dict[str, tuple[str, str, str]]:
        """path name -> (client namespace, server namespace, server address)."""
        return {
            "direct": (self.n1.ns, self.n2.ns, self.n2.fabric_ip),
            "routed": (self.w1.ns, self.w2.ns, self.w2.ip),
            "vxlan": (self.v1.ns, self.v2.ns, self.v2.ip),
            "routed+pol": (self.p1.ns, self.p2.ns, self.p2.ip),
            "routed-bare": (self.b1.ns, self.b2.ns, self.b2.ip),
        }

    def set_mode(self, mode: str) -> None:
        """Put every device in its state for ``mode`` (see the module docstring); defaults are restored first."""
        if mode not in MODES:
            raise ValueError(f"offload mode must be one of {MODES}, not {mode!r}")
        off = {"on": [], "off": self.nic + self.soft, "nicoff": self.nic}[mode]
        for dev in self.nic + self.soft:
            if dev in off:
                topology.set_offloads(*dev, {"tso": False, "gso": False, "gro": False})
            else:
                topology.set_offloads(*dev, self._defaults[dev])


IPERF_PORT = 5201


def _iperf(client_ns: str, addr: str, seconds: int, streams: int) -> float:
    """One TCP run of ``streams`` iperf3 clients at once, one stream each, to servers on consecutive ports;
    received Gbit/s summed.

    Not ``iperf3 -P``: before 3.16 (Debian 12 ships 3.12) iperf3 runs every stream of a test on one thread,
    so ``-P 4`` measured one sending core (perf: the client thread at 100 % of a core on every path, the
    routed path's forwarding softirqs run inline on it) and never the two cores four streams can use.
    """
    cmd = ["iperf3", "-c", addr, "-t", str(seconds), "-P", "1", "-J"]
    last = ""
    for _attempt in range(5):  # a server may still be starting
        procs = [subprocess.Popen(netns.nsenter_cmd(client_ns, [*cmd, "-p", str(IPERF_PORT + i)]),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(streams)]
        outs = [proc.communicate(timeout=seconds + 30) for proc in procs]
        if all(proc.returncode == 0 for proc in procs):
            return sum(float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) for out, _err in outs) / 1e9
        last = " | ".join((out[-300:] + err[-300:]).strip() for (out, err), proc in zip(outs, procs, strict=True)
                          if proc.returncode != 0)
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
        for i in range(max(STREAMS)):  # one server per stream: see _iperf
            ctx.workspace.spawn(["iperf3", "-s", "-p", str(IPERF_PORT + i)], netns_name=server_ns)
        ctx.workspace.spawn([python_exe(), "-m", "bench.udpecho", "server", str(UDP_PORT)], netns_name=server_ns,
                            env=env)
    time.sleep(0.5)


def run(ctx: Context) -> Result:
    need_root()
    for binary in ("iperf3", "ethtool", "ping"):
        need_binary(binary)
    res = Result(NAME, TITLE, ctx.quick)
    # A verdict needs >= 10 paired rounds (bench.stats): 10 interleaved rounds of the modes with targets
    # (on, off), 2 s per iperf3 run to keep that near 10 minutes; nicoff (no target) gets 3 of them.
    seconds = ctx.size(2, 1)
    rounds = ctx.size(10, 1)
    nicoff_rounds = ctx.size(3, 1)
    pings = ctx.size(200, 20)
    udps = ctx.size(500, 30)
    stream_counts = STREAMS
    topo = Topo(ctx)
    paths = topo.paths()
    res.setup.update({
        "wiring": "direct (bench.topology, the same steps as l3net-cni: cali veth, /32, 169.254.1.1, proxy_arp, "
                  "proxy_delay=0, scope-link host route proto 76, no encapsulation)",
        "fabric": "one veth pair between the two node namespaces, 10.99.0.0/24",
        "vxlan": "as Flannel's vxlan backend: VNI 1, port 8472, nolearning, MTU 1500-50 on vxlan0 and on the "
                 "VXLAN workloads, /32 VTEP address, permanent ARP + FDB entry per peer, block route via the peer "
                 "VTEP onlink, kernel-default UDP checksum",
        "offloads": {"on": "kernel defaults on cali*, workload eth0 and vxlan0 (veth GRO off); tso/gso/gro on "
                           "on the fabric eth0, as a real NIC defaults",
                     "off": "ethtool -K tso off gso off gro off on every device any path crosses: fabric eth0, "
                            "cali*, workload eth0, vxlan0",
                     "nicoff": "tso/gso/gro off on the fabric eth0 only (a NIC without offloads); veths and "
                               "vxlan0 at their defaults; TCP only, no target"},
        "cpu_pinning": "none for any path",
        "iperf3": {"seconds": seconds, "streams": list(stream_counts), "version": tool_version(["iperf3", "-v"])},
        "rounds": rounds, "nicoff_rounds": nicoff_rounds, "pings_per_round": pings, "udp_requests_per_round": udps,
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

    for rnd, offload in interleaved(rounds, MODES):
        if offload == "nicoff" and rnd >= nicoff_rounds:
            continue
        topo.set_mode(offload)
        for streams, path in [(s, p) for s in stream_counts for p in _rotate(paths, rnd)]:
            client_ns, _server_ns, addr = paths[path]
            gbps = _iperf(client_ns, addr, seconds, streams)
            res.sample(f"tcp_{streams}stream_offload_{offload}", path, gbps, unit="Gbit/s")
            _log.info("iperf3 round=%d offload=%s streams=%d path=%s gbps=%.2f", rnd, offload, streams, path, gbps)
        if offload == "nicoff":
            continue  # latency does not depend on segmentation offloads; keep the run short
        for path in _rotate(paths, rnd):
            client_ns, _server_ns, addr = paths[path]
            res.sample(f"ping_rtt_p50_offload_{offload}", path, percentile(_ping(client_ns, addr, pings), 50),
                       unit="us", better="lower")
            udp = _udp_rtts(client_ns, addr, udps)
            res.sample(f"udp_rtt_p50_offload_{offload}", path, percentile(udp, 50), unit="us", better="lower")
            res.sample(f"udp_rtt_p99_offload_{offload}", path, percentile(udp, 99), unit="us", better="lower")
    topo.set_mode("on")

    declare(res, with_policy="routed+pol" in paths)
    return res


def declare(res: Result, *, with_policy: bool = True) -> None:
    """The ratios and targets, from the samples in ``res`` (pure: unit-tested with synthetic samples)."""
    for offload in ("on", "off"):
        for streams in STREAMS:
            targets = TARGETS[(offload, streams)]
            metric = f"tcp_{streams}stream_offload_{offload}"
            tag = f"tcp{streams} offload {offload}"
            res.ratio(f"routed/direct {tag}", metric, "routed", "direct", op=">=", threshold=targets["routed/direct"])
            res.ratio(f"routed/vxlan {tag}", metric, "routed", "vxlan", op=">=", threshold=targets["routed/vxlan"])
            if with_policy:
                # No target: after a flow's first packet conntrack answers, so throughput cannot see the
                # policies; their cost is measured per new connection by the conn_rate benchmark.
                res.ratio(f"routed+pol/routed {tag}", metric, "routed+pol", "routed",
                          note=f"{POLICIES} policies; throughput only (conntrack), see conn_rate for policy cost")
            res.ratio(f"routed/routed-bare {tag}", metric, "routed", "routed-bare",
                      note="felix's per-packet rule walk: the same wiring and conntrack without felix's rules")
        for lat in ("ping_rtt_p50", "udp_rtt_p50"):
            metric = f"{lat}_offload_{offload}"
            res.ratio(f"{lat} routed/direct offload {offload}", metric, "routed", "direct",
                      note="latency: lower is better, 1.0 means no added cost")
            res.ratio(f"{lat} vxlan/routed offload {offload}", metric, "vxlan", "routed")
    for streams in STREAMS:
        metric = f"tcp_{streams}stream_offload_nicoff"
        note = "offloads off on the NIC (fabric) only; no target in the issue for this definition"
        res.ratio(f"routed/direct tcp{streams} offload nicoff", metric, "routed", "direct", note=note)
        res.ratio(f"routed/vxlan tcp{streams} offload nicoff", metric, "routed", "vxlan", note=note)


def _rotate(paths: dict[str, tuple[str, str, str]], k: int) -> list[str]:
    names = list(paths)
    k %= len(names)
    return names[k:] + names[:k]
