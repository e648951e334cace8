"""The real agent (``l3net agent``) in a node namespace against a real etcd: routes, restart, metrics."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from felix.config import config_key
from l3net import netns
from l3net.constants import ROUTE_PROTO
from l3net.lab import procs
from tests.builders import gnp, netpol, ns
from tests.netns.felix_rig import Node, Pinger, RouteMonitor, routes
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]

P = ROUTE_PROTO


def test_agent_programs_exactly_what_the_datastore_says(node: Node) -> None:
    foreign = routes(node.ns)
    node.add_workload("a", "10.65.0.2")
    node.add_workload("b", "10.65.0.3")
    node.write_wep("c", "10.65.0.66", "caliremote", node="n2")   # another node's workload: not ours
    blk = node.write_affinity("10.65.0.0/26")
    node.write_affinity("10.65.1.0/26", state="pending")
    node.write_affinity("10.65.0.64/26", node="n2")
    node.ds.put(node.keys.resource("workloadendpoints", "garbage", "default"), b"{not json")
    node.start_agent()
    want = {f"10.65.0.2 dev calia proto {P} scope link metric 1024",
            f"10.65.0.3 dev calib proto {P} scope link metric 1024",
            f"blackhole 10.65.0.0/26 proto {P} metric 1024"}
    wait_for(lambda: routes(node.ns, P) == want, what="routes of the datastore's workloads and block")
    assert routes(node.ns) == foreign | want
    wait_for(node.ready, what="readiness")
    assert netns.read_sysctl("net/ipv4/conf/calia/proxy_arp", node.ns) == "1"
    assert netns.read_sysctl("net/ipv4/neigh/calib/proxy_delay", node.ns) == "0"
    # Real traffic between the two workloads through the node.
    netns.run(node.workloads["a"], ["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.65.0.3"])
    # The Node resource is registered with the autodetected address; the status key is leased.
    doc = json.loads(node.ds.get(node.keys.resource("nodes", "n1")).value)
    assert doc["spec"]["bgp"]["ipv4Address"] == "10.0.0.1/24"
    status = wait_for(lambda: node.ds.get(node.keys.node_status("n1", "agent")), what="agent status")
    assert status.lease != 0

    # A workload whose interface appears after its endpoint gets its route then.
    node.write_wep("late", "10.65.0.9", "calilate")
    node.add_workload("late", "10.65.0.9", write_wep=False)
    wait_for(lambda: f"10.65.0.9 dev calilate proto {P} scope link metric 1024" in routes(node.ns, P),
             what="route of a late interface")

    # Deleting removes exactly what was added; the foreign routes stay.
    for pod in ("a", "b", "late"):
        node.ds.delete(node.wep_key(pod))
    node.ds.delete(blk)
    wait_for(lambda: routes(node.ns, P) == set(), what="routes removed")
    assert routes(node.ns) == foreign
    assert node.proc is not None and node.proc.poll() is None  # the garbage value did not kill it


def metrics(node: Node) -> dict[str, float]:
    code, text = node.http(9091, "/metrics")
    assert code == 200
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def put_policies(node: Node) -> None:
    """A NetworkPolicy and a GlobalNetworkPolicy that allow everything (so traffic tests still pass)."""
    for plural, res in (("namespaces", ns("default")),
                        ("networkpolicies", netpol("allow-all", "default", {"podSelector": {}, "ingress": [{}]})),
                        ("globalnetworkpolicies", gnp("allow-in", {"order": 10, "selector": "all()",
                                                                   "types": ["Ingress"],
                                                                   "ingress": [{"action": "Allow"}]}))):
        node.ds.put(node.keys.resource(plural, res.name, res.namespace), res.to_json())


def test_metrics_and_readiness_answer(node: Node) -> None:
    node.add_workload("a", "10.65.0.2")
    node.write_affinity("10.65.0.0/26")
    put_policies(node)
    node.start_agent()
    wait_for(node.ready, what="readiness")
    code, body = node.http(9099, "/readiness")
    assert code == 200 and json.loads(body) == {"ready": True, "notReady": {}}
    assert node.http(9099, "/liveness")[0] == 200
    samples = wait_for(lambda: (m := metrics(node)).get("l3net_policy_active") == 2 and m, what="policy metrics")
    assert samples["l3net_datastore_in_sync"] == 1.0
    assert samples["l3net_active_local_endpoints"] == 1.0
    assert samples['l3net_routes_programmed{kind="workload"}'] == 1.0
    assert samples['l3net_routes_programmed{kind="blackhole"}'] == 1.0
    assert samples["l3net_dataplane_apply_time_seconds_count"] >= 1
    assert "l3net_dataplane_failures_total" in samples
    # Policy is wired: the compiled program is in the node's iptables and counted.
    filter_save = netns.run(node.ns, ["iptables-save", "-t", "filter"]).stdout
    assert ":l3n-" in filter_save
    assert samples['l3net_iptables_rules{table="filter"}'] > 0
    # The policy program's own numbers (PolicyProgram.metrics()).
    assert samples["l3net_policy_global_active"] == 1
    our_chains = [line for line in filter_save.splitlines() if line.startswith(":l3n-")]
    assert samples["l3net_policy_chains"] >= len(our_chains) > 0
    assert samples["l3net_policy_rules"] >= samples['l3net_iptables_rules{table="filter"}']
    assert "l3net_policy_compile_seconds" in samples and "l3net_policy_recompiled" in samples
    assert samples["l3net_policy_ipsets"] >= 0 and "l3net_policy_ipset_members" in samples
    # The drivers' counters (IptablesDriver.stats(), IpsetDriver.stats()).
    assert samples["l3net_iptables_restore_calls_total"] >= 1
    assert samples["l3net_iptables_save_calls_total"] >= 1
    assert samples["l3net_iptables_lines_written_total"] >= len(our_chains)
    assert samples["l3net_iptables_restore_errors_total"] == 0
    assert samples["l3net_iptables_drift_repairs_total"] == 0
    assert "l3net_iptables_apply_seconds" in samples
    assert samples["l3net_ipset_save_calls_total"] >= 1 and samples["l3net_ipset_restore_errors_total"] == 0
    assert "l3net_ipset_restore_calls_total" in samples and "l3net_ipset_lines_written_total" in samples
    # The syncer's counters: one snapshot, every key of the prefix reported.
    assert samples["l3net_resyncs_started_total"] == 1
    assert samples["l3net_resyncs_completed_total"] == 1
    kvs, _ = node.ds.list(node.keys.prefix)
    # Keys the agent wrote itself (its Node, its status) come back through the watch too.
    assert samples["l3net_datastore_updates_total"] >= len(kvs) - 2


def _hook_rule(save: str, chain: str) -> list[str] | None:
    for line in save.splitlines():
        if line.startswith("-A FORWARD ") and f"-j {chain}" in line:
            return shlex.split(line)[2:]
    return None


def test_deleted_chain_is_repaired_after_the_refresh_interval(node: Node) -> None:
    """Drift in iptables heals on the periodic refresh; the interval comes from the datastore's config keys."""
    node.ds.put(config_key(node.keys, "global", "RouteRefreshInterval"), b"600")
    node.ds.put(config_key(node.keys, "node", "RouteRefreshInterval", "n1"), b"2")   # beats the global value
    node.ds.put(config_key(node.keys, "node", "RouteRefreshInterval", "n2"), b"1")   # another node's
    node.add_workload("a", "10.65.0.2")
    put_policies(node)
    node.start_agent()
    wait_for(node.ready, what="readiness")
    key = node.keys.prefix + "config/node/n1/RouteRefreshInterval"
    assert f"'route_refresh_interval': 'datastore {key}'" in node.log()

    def filter_save() -> str:
        return netns.run(node.ns, ["iptables-save", "-t", "filter"]).stdout

    wait_for(lambda: _hook_rule(filter_save(), "l3n-FORWARD"), what="l3n-FORWARD hooked")
    save = filter_save()
    # Someone deletes our top chain: hook first, then flush and delete it (-F/-X).
    netns.run(node.ns, ["iptables", "-D", "FORWARD", *_hook_rule(save, "l3n-FORWARD")])
    netns.run(node.ns, ["iptables", "-F", "l3n-FORWARD"])
    netns.run(node.ns, ["iptables", "-X", "l3n-FORWARD"])
    assert ":l3n-FORWARD" not in filter_save()
    wait_for(lambda: _hook_rule(filter_save(), "l3n-FORWARD"), timeout=20,
             what="l3n-FORWARD and its hook restored by the periodic refresh")
    restored = filter_save()
    assert sorted(x for x in restored.splitlines() if "l3n" in x) == sorted(x for x in save.splitlines() if "l3n" in x)
    assert wait_for(lambda: metrics(node).get("l3net_iptables_drift_repairs_total", 0) >= 1, what="drift counted")

    # A bad value is logged with its key and ignored: the global value applies (live, no restart).
    node.ds.put(config_key(node.keys, "node", "RouteRefreshInterval", "n1"), b"soon")
    wait_for(lambda: f"invalid datastore config value, ignored key={key}" in node.log(), what="bad value logged")
    global_key = node.keys.prefix + "config/global/RouteRefreshInterval"
    wait_for(lambda: f"'route_refresh_interval': '600.0 (from datastore {global_key})'" in node.log(),
             what="the global value applied live")
    assert node.proc is not None and node.proc.poll() is None


def test_the_agents_long_lived_restore_processes_end_with_it_on_sigterm_and_on_sigkill(node: Node) -> None:
    node.add_workload("a", "10.65.0.2")
    node.write_affinity("10.65.0.0/26")
    put_policies(node)
    for stop in (node.stop_agent, node.kill_agent):
        _restore_process_ends_with_the_agent(node, stop)


def _restore_process_ends_with_the_agent(node: Node, stop: Callable[[], object]) -> None:
    proc = node.start_agent()
    wait_for(node.ready, what="readiness")
    # A restarted agent adopts the rules it finds and writes nothing: give it a change to write.
    pol = netpol(f"allow-{proc.pid}", "default",
                 {"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP", "port": 1024 + proc.pid % 60000}]}]})
    node.ds.put(node.keys.resource("networkpolicies", pol.name, pol.namespace), pol.to_json())
    wait_for(lambda: metrics(node).get("l3net_iptables_restore_processes_total") == 1,
             what="the agent's iptables restore session")
    kids = wait_for(lambda: [k for k in procs.children(proc.pid) if procs.cmdline(k)[:1] == ["iptables-nft-restore"]],
                    what="the restore process, a child of the agent")
    assert len(kids) == 1
    stop()
    # SIGTERM: the agent ends it; SIGKILL: its stdin closes with the agent, and it exits on EOF.
    wait_for(lambda: all(procs.starttime(k) is None for k in kids), timeout=10,
             what=f"the restore process gone after {getattr(stop, '__name__', stop)}")


def test_sigkill_and_restart_drop_no_packet_and_touch_no_route(node: Node) -> None:
    wa = node.add_workload("a", "10.65.0.2")
    node.add_workload("b", "10.65.0.3")
    node.write_affinity("10.65.0.0/26")
    node.start_agent()
    wait_for(lambda: len(routes(node.ns, P)) == 3, what="routes")
    wait_for(node.ready, what="readiness")
    netns.run(wa, ["ping", "-c", "1", "-W", "2", "10.65.0.3"])
    before = routes(node.ns)
    monitor = RouteMonitor(node.ns, node.factory)
    ping = Pinger(wa, "10.65.0.3", node.factory)
    time.sleep(0.5)  # the ping is flowing before the kill
    node.kill_agent()
    node.start_agent()
    wait_for(node.ready, what="readiness after restart")
    time.sleep(1.0)  # keep pinging across the restarted agent's first applies
    sent, received = ping.stop()
    events = monitor.stop()
    assert ping.rate >= 50, f"only {ping.rate:.0f} packets per second"
    assert received == sent, f"lost {sent - received} of {sent} packets"
    assert [e for e in events if "10.65." in e] == []  # nothing deleted and re-added
    assert routes(node.ns) == before


def _cni(node: Node, command: str, pod: str, pod_ns: str, lock_dir: Path) -> dict:
    conf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "l3net-cni", "etcd_endpoints": node.endpoint,
            "etcd_prefix": node.keys.prefix, "nodename": node.name, "mtu": 0, "ipam": {"type": "l3net-ipam"}}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command, "CNI_CONTAINERID": f"c-{pod}",
           "CNI_NETNS": f"/run/netns/{pod_ns}", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}",
           "L3NET_CNI_LOCK_DIR": str(lock_dir)}
    proc = subprocess.run(["ip", "netns", "exec", node.ns, str(Path(sys.executable).with_name("l3net-cni"))],
                          input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, (proc.stdout, proc.stderr[-2000:])
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def test_workloads_created_through_the_cni_plugin(node: Node, tmp_path: Path) -> None:
    foreign = routes(node.ns)
    pool = {"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": "p"},
            "spec": {"cidr": "10.70.0.0/16", "blockSize": 26}}
    node.ds.put(node.keys.resource("ippools", "p"), json.dumps(pool).encode())
    node.start_agent()
    wait_for(node.ready, what="readiness")
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    pods = {p: node.factory("c" + p) for p in ("x", "y")}
    ips = {}
    for pod, pod_ns in pods.items():
        result = _cni(node, "ADD", pod, pod_ns, lock_dir)
        ips[pod] = result["ips"][0]["address"].split("/")[0]

    def blackholes() -> set[str]:
        kvs, _ = node.ds.list(node.keys.node_affinities("n1"))
        return {f"blackhole {node.keys.parse_affinity(kv.key)[1]} proto {P} metric 1024" for kv in kvs
                if json.loads(kv.value).get("state") == "confirmed"}

    def workload_routes() -> set[str]:
        return {r for r in routes(node.ns, P) if not r.startswith("blackhole")}

    wait_for(lambda: len(blackholes()) == 1 and blackholes() <= routes(node.ns, P), what="the block's blackhole")
    wait_for(lambda: {r.split()[0] for r in workload_routes()} == set(ips.values()), what="workload routes")
    # The agent has applied both endpoints (it counts the routes it holds, adopted ones included) ...
    wait_for(lambda: (m := metrics(node)).get("l3net_active_local_endpoints") == 2
             and m.get('l3net_routes_programmed{kind="workload"}') == 2, what="the agent's apply of both pods")
    # ... and the node has exactly one /32 per pod: the plugin's route was adopted, not duplicated.
    for ip in ips.values():
        mine = [r for r in routes(node.ns) if r.split()[0] in (ip, f"{ip}/32")]
        assert len(mine) == 1, mine
    assert netns.read_sysctl(f"net/ipv4/neigh/{workload_routes().pop().split()[2]}/proxy_delay", node.ns) == "0"
    netns.run(pods["x"], ["ping", "-c", "3", "-i", "0.2", "-W", "2", ips["y"]])
    _cni(node, "DEL", "x", pods["x"], lock_dir)
    wait_for(lambda: {r.split()[0] for r in workload_routes()} == {ips["y"]}, what="x's route removed")
    _cni(node, "DEL", "y", pods["y"], lock_dir)
    wait_for(lambda: workload_routes() == set(), what="all workload routes removed")
    # What stays is exactly the foreign routes and the blackholes of blocks still affine to the node.
    wait_for(lambda: routes(node.ns) == foreign | blackholes(), what="only foreign routes and blackholes")
