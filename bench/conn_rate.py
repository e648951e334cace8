"""bench.conn_rate: new TCP connections per second between two pods, through 1,000 policies vs none.

Throughput cannot see policy: after a flow's first packet conntrack answers, so iperf3 through
any number of policies measures the same thing. A new connection is where policy costs: its
first packet walks the chains. Three identical node pairs (bench.topology: pods wired as
l3net-cni wires them, one pod on each node, plain routes between the nodes), one per variant,
measured in interleaved rounds:

  none    no policy and no iptables rules at all on either node
  felix   1,000 NetworkPolicies selecting the pair (bench.policyload.dataplane_policies: 999 allow
          only ports this test never uses, the last allows the pair, so every new connection's
          first packet walks all of them, on the client's node (egress) and the server's (ingress)),
          compiled by policy.compiler and applied by felix's ipsets and iptables drivers
  bare    the very same compiled programs loaded by a bare ``ipset restore`` + ``iptables-restore``
  felix-0 felix's program with the pods as endpoints but no policy (its base chains, conntrack, the
          dispatch): splits felix/none into what any policy dataplane costs and what 1,000 policies add
  conntrack  one rule on each node and nothing else (FORWARD: drop ctstate INVALID), which is enough to
          make the kernel track every connection in that namespace: what connection tracking alone
          costs, which any stateful firewall pays (Calico's included), so felix-0/conntrack is what
          felix's own base chains add and felix/conntrack what l3net adds above the kernel's tracking
  conntrack-rpf  the conntrack variant plus felix's reverse-path check (raw PREROUTING: drop what
          arrives from a workload interface with a source not routed back through it), so the steps
          none -> conntrack -> conntrack-rpf -> felix-0 -> felix each add one part of felix's cost

In each sample ``bench/tcpconn.py`` in the client pod opens connections one after the other to the
server pod (connect, the server accepts and closes, the client reads the close and closes) for a
fixed time; the rate is connections per second. Every node's TIME_WAIT conntrack timeout is set to
2 s (all variants alike) so a million short connections do not fill the host-wide conntrack table;
it does not change what a new connection's first packet walks. The runs are checked after the
rounds: the l3n- rules on the client's node must have matched packets (felix-0, felix, bare), and
a short run must leave tracked connections in the client node's conntrack table in every variant
but none, and none in none's (else the variants do not differ as named).
Target (issue 18): felix / none >= 0.8.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from bench import policyload, topology
from bench.framework import Context, Result, interleaved, need_binary, need_root, python_exe
from l3net import netns
from l3net.lab import checks

_log = logging.getLogger(__name__)

NAME = "conn_rate"
TITLE = "new TCP connections per second between two pods: no policy vs felix with 1,000 policies vs iptables-restore"
NEEDS = ["root", "iptables", "iptables-restore", "iptables-save", "ipset"]
PORT = 7000  # none of the 999 non-matching policies allows it: the last policy does
POLICIES = 1000
TARGET_FELIX_NONE = 0.8
TIME_WAIT_S = 2
# variant -> namespace prefix of its node pair
VARIANTS = {"none": "a", "conntrack": "c", "conntrack-rpf": "r", "felix-0": "z", "felix": "f", "bare": "b"}
# The one rule of the conntrack variant: its conntrack match makes the kernel track the namespace's
# traffic (nf_conntrack hooks a namespace only once a rule there needs it), and it drops nothing here.
CONNTRACK_ONLY_RULE = ["FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]
# felix's reverse-path check as policy.render writes it (in its own chain there), for the conntrack-rpf variant
RPF_RULE = ["-t", "raw", "-A", "PREROUTING", "-i", "cali+", "-m", "rpfilter", "--invert", "-j", "DROP"]


class Pair:
    """One node pair with a client pod on n1 and a server pod on n2."""

    def __init__(self, ctx: Context, variant: str, policies: int) -> None:
        policies = 0 if variant == "felix-0" else policies
        ws = ctx.workspace
        p = VARIANTS[variant]
        self.n1, self.n2 = topology.node_pair(ws, prefix=p)
        self.client = topology.wire_workload(ws, self.n1, f"{p}c", "10.244.1.2")
        self.server = topology.wire_workload(ws, self.n2, f"{p}s", "10.244.2.2")
        topology.route_block(self.n1, "10.244.1.0/26", "10.244.2.0/26", self.n2.fabric_ip)
        topology.route_block(self.n2, "10.244.2.0/26", "10.244.1.0/26", self.n1.fabric_ip)
        self.policy: dict[str, Any] = {}
        if variant in ("conntrack", "conntrack-rpf"):
            for node in (self.n1, self.n2):
                netns.run(node.ns, ["iptables", "-w", "-A", *CONNTRACK_ONLY_RULE])
                if variant == "conntrack-rpf":
                    netns.run(node.ns, ["iptables", "-w", *RPF_RULE])
        elif variant != "none":
            self.policy = policyload.install_dataplane_policies(ws, self.n1, self.client, self.n2, self.server,
                                                                count=policies, bare=variant == "bare")
        for node in (self.n1, self.n2):
            _conntrack_time_wait(node.ns)
        # the client makes ~10^5 connections a minute: give it every port (the server closes first, so
        # the client never sits in TIME_WAIT, but the server's TIME_WAIT keeps a 4-tuple for a while)
        netns.write_sysctl("net.ipv4.ip_local_port_range", "1024 65535", netns=self.client.ns)
        ws.spawn([python_exe(), "-m", "bench.tcpconn", "server", str(PORT)], netns_name=self.server.ns,
                 env=dict(os.environ, PYTHONPATH=_repo_root()))


def _repo_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _conntrack_time_wait(ns: str) -> None:
    """TIME_WAIT conntrack entries live 2 s instead of 120 s in our node namespaces (see the module doc)."""
    key = "net/netfilter/nf_conntrack_tcp_timeout_time_wait"
    # conntrack not loaded: then there are no conntrack entries to fill the table with either
    with contextlib.suppress(FileNotFoundError):
        netns.write_sysctl(key, TIME_WAIT_S, netns=ns)


def connect_rate(client_ns: str, addr: str, seconds: float) -> dict[str, Any]:
    """One sample: {"connections", "seconds", "errors"} from bench.tcpconn's client in ``client_ns``."""
    out = netns.run(client_ns, [python_exe(), "-m", "bench.tcpconn", "client", addr, str(PORT), str(seconds)],
                    check=False, timeout=seconds + 60, env=dict(os.environ, PYTHONPATH=_repo_root()))
    if out.returncode != 0:
        raise RuntimeError(f"tcpconn client to {addr} in {client_ns} failed: {out.stderr[-500:]}")
    return dict(json.loads(out.stdout))


def count_matches(save_text: str, chain_prefix: str = "l3n-") -> int:
    """Packets matched by the rules of ``chain_prefix`` chains in ``iptables-save -c`` output."""
    total = 0
    for line in save_text.splitlines():
        if line.startswith("[") and f" -A {chain_prefix}" in line:
            total += int(line[1:].split(":", 1)[0])
    return total


def rule_matches(ns: str) -> int:
    """Packets matched by l3n- rules in ``ns``'s filter table (iptables-save -c counters)."""
    return count_matches(netns.run(ns, ["iptables-save", "-c", "-t", "filter"]).stdout)


def tracked_connections(ns: str) -> int:
    """Connections in ``ns``'s conntrack table (the count is per namespace); 0 when nothing loaded conntrack."""
    try:
        return int(netns.read_sysctl("net/netfilter/nf_conntrack_count", netns=ns))
    except FileNotFoundError:
        return 0


def check_tracking(counts: dict[str, int]) -> None:
    """Raises unless every variant but none tracked the connections of a run just made and none tracked none."""
    if counts.get("none", 0) != 0:
        raise RuntimeError(f"none: {counts['none']} tracked connections on the client's node: the baseline "
                           "is not free of connection tracking")
    untracked = [v for v, n in counts.items() if v != "none" and n == 0]
    if untracked:
        raise RuntimeError(f"{', '.join(untracked)}: no tracked connection on the client's node after a run: "
                           "conntrack was not on the path")


def _wait_ready(pair: Pair) -> None:
    """Until the server answers (it may still be starting): a short run must complete connections."""
    def ready() -> bool:
        return connect_rate(pair.client.ns, pair.server.ip, 0.2)["connections"] > 0
    checks.wait_for(ready, 20, f"tcpconn server at {pair.server.ip} reachable from {pair.client.ns}", interval=0.2)


def run(ctx: Context) -> Result:
    need_root()
    for binary in ("iptables", "iptables-restore", "iptables-save", "ipset"):
        need_binary(binary)
    rounds = ctx.size(10, 3)  # a verdict needs >= 10 paired rounds (bench.stats); --quick gives none
    seconds = ctx.size(2.0, 0.5)
    n_pol = ctx.size(POLICIES, 50)
    res = Result(NAME, TITLE, ctx.quick)
    pairs = {v: Pair(ctx, v, n_pol) for v in VARIANTS}
    for pair in pairs.values():
        _wait_ready(pair)
    res.setup.update({
        "policies": n_pol, "rounds": rounds, "seconds_per_sample": seconds, "port": PORT,
        "conntrack_time_wait_s": TIME_WAIT_S,
        "variants": {"none": "no policy, no iptables rules on either node",
                     "conntrack": "one rule per node (FORWARD -m conntrack --ctstate INVALID -j DROP): "
                                  "connection tracking alone",
                     "conntrack-rpf": "the conntrack variant plus felix's reverse-path check on workload "
                                      "interfaces (raw PREROUTING -i cali+ -m rpfilter --invert -j DROP)",
                     "felix-0": "felix's program for the two pods with no policy: base chains, conntrack, dispatch",
                     "felix": "policies compiled by policy.compiler, applied by felix's ipsets/iptables drivers",
                     "bare": "the same compiled programs loaded by ipset restore + iptables-restore --noflush"},
        "policy": {v: p.policy for v, p in pairs.items() if p.policy},
        "helper": "bench/tcpconn.py: connect, server accepts and closes, client reads EOF and closes; "
                  "one connection at a time",
    })
    errors = dict.fromkeys(VARIANTS, 0)
    made = dict.fromkeys(VARIANTS, 0)
    for rnd, variant in interleaved(rounds, list(VARIANTS)):
        pair = pairs[variant]
        out = connect_rate(pair.client.ns, pair.server.ip, seconds)
        if out["connections"] == 0:
            raise RuntimeError(f"{variant}: no connection completed in {seconds} s ({out['errors']} errors)")
        rate = out["connections"] / out["seconds"]
        errors[variant] += out["errors"]
        made[variant] += out["connections"]
        res.sample("conn_per_s", variant, rate, unit="conn/s")
        _log.info("conn rate round=%d variant=%s conn_per_s=%.0f errors=%d", rnd, variant, rate, out["errors"])
    res.setup["connections"] = made
    res.setup["errors"] = errors
    matches = {v: rule_matches(pairs[v].n1.ns) for v in ("felix-0", "felix", "bare")}
    res.setup["l3n_rule_matches_client_node"] = matches
    for v, n in matches.items():
        if n == 0:
            raise RuntimeError(f"{v}: no l3n- rule matched a packet on the client's node: the policy was not "
                               "on the path")
    tracked = {}
    for v, pair in pairs.items():  # read at once after a short run: TIME_WAIT entries live TIME_WAIT_S
        connect_rate(pair.client.ns, pair.server.ip, 0.2)
        tracked[v] = tracked_connections(pair.n1.ns)
    res.setup["conntrack_entries_client_node_after_check_run"] = tracked
    check_tracking(tracked)
    declare(res, n_pol)
    return res


def declare(res: Result, n_pol: int) -> None:
    """The ratios and the target, from the samples in ``res`` (pure: unit-tested with synthetic samples)."""
    res.ratio("felix/none new connections per second", "conn_per_s", "felix", "none", op=">=",
              threshold=TARGET_FELIX_NONE, note=f"{n_pol} policies, every new connection walks all of them")
    for numerator, denominator, note in (
            ("bare", "none", "the same rules loaded by iptables-restore: what the rules themselves cost"),
            ("felix", "bare", "the same rules either way: ~1 means felix adds nothing per connection beyond them"),
            ("felix-0", "none", "felix with no policy: what its base chains and conntrack cost"),
            ("felix", "felix-0", f"what {n_pol} policies add on top of felix's base chains"),
            # the steps from no firewall to felix, one part each
            ("conntrack", "none", "connection tracking alone (one rule per node): what any stateful dataplane pays"),
            ("conntrack-rpf", "conntrack", "what the reverse-path check on workload interfaces costs"),
            ("felix-0", "conntrack-rpf", "what felix's filter chains (dispatch, anti-spoofing, conntrack verdicts) "
                                         "cost"),
            ("felix-0", "conntrack", "what felix's base chains and dispatch add above the kernel's connection "
                                     "tracking"),
            ("felix", "conntrack", f"what l3net with {n_pol} policies costs above the kernel's connection tracking")):
        res.ratio(f"{numerator}/{denominator} new connections per second", "conn_per_s", numerator, denominator,
                  note=note)
