"""Degrade, never die, on data; independent drivers: the real agent, real etcd, real iptables, ipset and routes.

One node namespace (``felix_rig.Node``) with the real ``l3net agent``; a client pod
no policy selects (``x``) sends the traffic whose verdicts are checked. The datastore holds a GlobalNetworkPolicy
whose rule has ``source.nets: [10.0.0.0/8, 0.0.0.0/0]`` (``ipset`` refuses a /0
in ``hash:net``: compiled as two /1s now), one with ``notNets: [0.0.0.0/0]`` (so
it matches nothing), and a WorkloadEndpoint with the interface name ``cali"q`` (a
valid Linux name that ``iptables-restore`` would refuse), written raw into etcd as a
compromised writer would, behind the validator. The agent's own check (issue 13)
makes that endpoint absent before it reaches the kernel: no route, no chain, its
interface dropped by the dispatch chains (fail closed). The agent stays up, traffic
follows every other policy, pods added meanwhile are routed and policed, and the bad
endpoint is reported (log, metric, node status, l3netctl) until it is fixed.

The kernel-refusal path of the quarantine (an object that passes validation and the
kernel still refuses) is proven with a stateful fake in
``tests/drivers/test_felix_quarantine.py``: no endpoint that passes the strict
validation is refused by this kernel (``docs/containment.md``).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from l3net import netns
from l3net.constants import ROUTE_PROTO
from l3net.model.resource import Resource
from l3net.model.validation import workload_endpoint_name
from tests.builders import gnp, ns
from tests.netns.felix_rig import Node, routes
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]

P = ROUTE_PROTO
CTL = str(Path(sys.executable).with_name("l3netctl"))
BAD_IF = 'cali"q'
BAD_WEP = f"WorkloadEndpoint/default/{workload_endpoint_name('n1', 'q', 'eth0')}"


def bad_key(node: Node) -> str:
    return node.keys.resource("workloadendpoints", workload_endpoint_name("n1", "q", "eth0"), "default")


def add_pod(node: Node, pod: str, ip: str, app: str, iface: str | None = None) -> str:
    """A workload wired as the CNI plugin wires it, and its endpoint (labelled ``app``) in etcd."""
    iface = iface or f"cali{pod}"
    wns = node.factory("w1" + pod)
    node.factory.veth(node.ns, iface, wns, "eth0")
    netns.run(node.ns, ["ip", "link", "set", iface, "address", "ee:ee:ee:ee:ee:ee"])
    netns.run(wns, ["ip", "addr", "add", f"{ip}/32", "dev", "eth0"])
    netns.run(wns, ["ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"])
    netns.run(wns, ["ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"])
    node.workloads[pod] = wns
    node.ensure_pool(ip)  # the agent routes and polices pool addresses only
    name = workload_endpoint_name(node.name, pod, "eth0")
    res = Resource(kind="WorkloadEndpoint", name=name, namespace="default", labels={"app": app},
                   spec={"node": node.name, "orchestrator": "k8s", "pod": pod, "endpoint": "eth0",
                         "ipNetworks": [f"{ip}/32"], "interfaceName": iface})
    node.ds.put(node.keys.resource("workloadendpoints", name, "default"), res.to_json())
    return wns


def put(node: Node, plural: str, res: Resource) -> None:
    node.ds.put(node.keys.resource(plural, res.name, res.namespace), res.to_json())


def put_zero_prefix_policies(node: Node) -> None:
    put(node, "namespaces", ns("default"))
    # app=open: anything from 10/8 or anywhere (the rule that used to kill every agent).
    put(node, "globalnetworkpolicies", gnp("zero-nets", {
        "order": 10, "selector": "app == 'open'", "types": ["Ingress"],
        "ingress": [{"action": "Allow", "source": {"nets": ["10.0.0.0/8", "0.0.0.0/0"]}}]}))
    # app=closed: "not from anywhere" matches nothing, so the tier's end drops everything.
    put(node, "globalnetworkpolicies", gnp("no-nets", {
        "order": 20, "selector": "app == 'closed'", "types": ["Ingress"],
        "ingress": [{"action": "Allow", "source": {"notNets": ["0.0.0.0/0"]}}]}))


def children(pid: int) -> str:
    """Command lines of a process's children (all its threads'), space separated."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                out.append(Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            except FileNotFoundError:
                continue
    return " ".join(out)


def reaches(src_ns: str, dst: str) -> bool:
    """At least one of three echo requests answered (one lost packet on a loaded machine is not a verdict)."""
    return netns.run(src_ns, ["ping", "-c", "3", "-i", "0.2", "-W", "1", dst], check=False).returncode == 0


def drops(src_ns: str, dst: str) -> bool:
    return netns.run(src_ns, ["ping", "-c", "1", "-W", "1", dst], check=False).returncode != 0


def samples(node: Node) -> dict[str, float]:
    code, text = node.http(9091, "/metrics")
    if code != 200:
        return {}
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def agent_status(node: Node) -> dict:  # type: ignore[type-arg]
    kv = node.ds.get(node.keys.node_status(node.name, "agent"))
    return json.loads(kv.value) if kv is not None else {}


def workload_drops(node: Node) -> int:
    """Packets our chains dropped as from an unknown or spoofing workload: the raw table's reverse-path
    check on ``cali+`` (an endpoint with no route fails it first) and the from-workload dispatch chain's
    final DROP (an interface with no chains)."""
    total = 0
    for table, chain in (("raw", "l3n-PREROUTING"), ("filter", "l3n-from-wl-dispatch")):
        out = netns.run(node.ns, ["iptables", "-t", table, "-L", chain, "-v", "-x", "-n"]).stdout
        rows = [line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
        total += sum(int(r[0]) for r in rows if r[2] == "DROP" and r[5] in ("cali+", "*"))
    return total


def check_policy_verdicts(node: Node, pods: dict[str, str]) -> None:
    """Every verdict the policies (and the quarantine) call for, with real packets."""
    r = node.workloads["x"]  # a client pod no policy selects
    assert reaches(r, pods["a"]), "open pod a must be reachable from outside (source.nets with 0.0.0.0/0)"
    assert reaches(node.workloads["b"], pods["a"]), "open pod a must be reachable from pod b"
    assert drops(r, pods["b"]), "closed pod b must drop (notNets 0.0.0.0/0 matches nothing)"
    assert drops(node.workloads["a"], pods["b"]), "closed pod b must drop pod a too"
    assert drops(r, pods["q"]), "the invalid endpoint must be unreachable (no route: its block's blackhole)"
    before = workload_drops(node)
    assert drops(node.workloads["q"], pods["x"]), "the invalid endpoint's own traffic must be dropped"
    assert workload_drops(node) > before, "dropped by our chains (fail closed), not lost on the way"


def run_containment(node: Node, hold: float) -> dict[str, float]:
    pods = {"a": "10.65.0.2", "b": "10.65.0.3", "q": "10.65.0.9", "x": "10.65.0.10"}
    add_pod(node, "x", pods["x"], "client")
    add_pod(node, "a", pods["a"], "open")
    add_pod(node, "b", pods["b"], "closed")
    node.write_affinity("10.65.0.0/26")
    put_zero_prefix_policies(node)
    add_pod(node, "q", pods["q"], "open", iface=BAD_IF)
    # The neighbour a pod learns by proxy ARP, set by hand: the agent configures nothing on an absent
    # endpoint's interface, and q's packets must reach the node for the dispatch chain to drop them.
    netns.run(node.workloads["q"], ["ip", "neigh", "replace", "169.254.1.1", "lladdr", "ee:ee:ee:ee:ee:ee",
                                    "dev", "eth0"])
    node.start_agent()
    proc = node.proc
    assert proc is not None
    wait_for(node.ready, timeout=30, what="readiness")
    wait_for(lambda: samples(node).get("l3net_datastore_invalid_values") == 1, timeout=30,
             what="the invalid-values metric")
    wait_for(lambda: reaches(node.workloads["x"], pods["a"]), timeout=30, what="open pod a reachable")
    # Absent: no route and no rule names its interface (routes of its block's peers are in).
    assert not any(r.startswith("10.65.0.9 ") for r in routes(node.ns)), routes(node.ns)
    assert f"10.65.0.2 dev calia proto {P} scope link metric 1024" in routes(node.ns, P)
    assert BAD_IF not in netns.run(node.ns, ["iptables-save"]).stdout
    check_policy_verdicts(node, pods)

    # Pods added while the bad endpoint sits in quarantine are routed and policed.
    add_pod(node, "c", "10.65.0.4", "open")
    add_pod(node, "d", "10.65.0.5", "closed")
    wait_for(lambda: reaches(node.workloads["x"], "10.65.0.4"), timeout=30, what="new open pod c reachable")
    wait_for(lambda: f"10.65.0.5 dev calid proto {P} scope link metric 1024" in routes(node.ns, P),
             what="new closed pod d's route")
    wait_for(lambda: reaches(node.workloads["d"], "10.65.0.4"), what="new pod d reaching open pod c")
    assert drops(node.workloads["x"], "10.65.0.5") and drops(node.workloads["c"], "10.65.0.5"), \
        "new closed pod d must be policed"

    # Held for a while: the agent stays up, nothing else fails, verdicts hold.
    deadline = time.monotonic() + hold
    rounds = 0
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the agent exited: {node.log()[-3000:]}"
        check_policy_verdicts(node, pods)
        rounds += 1
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    assert proc.poll() is None
    m = samples(node)
    assert m["l3net_datastore_invalid_values"] == 1
    assert m['l3net_quarantined_objects{kind="WorkloadEndpoint"}'] == 0  # the kernel refused nothing
    assert m['l3net_quarantined_objects{kind="GlobalNetworkPolicy"}'] == 0  # the /0 rules apply now
    assert m.get('l3net_dataplane_side_failures_total{side="policy"}', 0) == 0
    assert m.get('l3net_dataplane_side_failures_total{side="routes"}', 0) == 0
    assert node.ready()
    # Reported where an operator looks: the log names its key, the node status and l3netctl show it.
    log = node.log()
    assert "invalid datastore value, treating as absent" in log and bad_key(node) in log
    st = wait_for(lambda: (s := agent_status(node)).get("quarantined") and s, what="the endpoint in node status")
    assert [(e["object"], e["effect"], e["cause"]) for e in st["quarantined"]] == [
        (BAD_WEP, "absent (invalid)", "invalid value")]
    assert "interfaceName" in st["quarantined"][0]["reason"] and st["quarantined"][0]["key"] == bad_key(node)
    out = subprocess.run([CTL, "node", "status", node.name], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "L3NET_ETCD_ENDPOINTS": node.endpoint,
                              "L3NET_ETCD_PREFIX": node.keys.prefix})
    assert out.returncode == 0, out.stderr
    assert BAD_WEP in out.stdout and "absent (invalid)" in out.stdout and "interfaceName" in out.stdout, out.stdout
    # Fixed (a sane interface name for a new pod incarnation): it is no longer set aside, the pod is policed.
    netns.run(node.ns, ["ip", "link", "set", BAD_IF, "name", "caliq"])
    add_endpoint = Resource(kind="WorkloadEndpoint", name=workload_endpoint_name("n1", "q", "eth0"),
                            namespace="default", labels={"app": "open"},
                            spec={"node": "n1", "orchestrator": "k8s", "pod": "q", "endpoint": "eth0",
                                  "ipNetworks": ["10.65.0.9/32"], "interfaceName": "caliq"})
    put(node, "workloadendpoints", add_endpoint)
    wait_for(lambda: reaches(node.workloads["x"], pods["q"]), timeout=30, what="the fixed endpoint reachable")
    wait_for(lambda: reaches(node.workloads["q"], pods["a"]), timeout=30, what="the fixed endpoint reaching pod a")
    assert drops(node.workloads["q"], pods["b"]), "the fixed endpoint is policed (b stays closed)"
    wait_for(lambda: samples(node).get("l3net_datastore_invalid_values") == 0, what="the invalid value gone")
    wait_for(lambda: agent_status(node).get("quarantined") == [], what="nothing set aside in node status")
    assert proc.poll() is None
    return {"rounds": rounds, "restore_errors": m.get("l3net_iptables_restore_errors_total", 0),
            "trials": m.get("l3net_quarantine_trials_total", 0),
            "decode_failures": m.get('l3net_datastore_decode_failures_total{where="model"}', 0)}


def test_refused_objects_are_contained_short(node: Node) -> None:
    figures = run_containment(node, hold=15.0)
    print(f"containment (15 s): {figures}")


@pytest.mark.soak
def test_refused_objects_are_contained_every_agent_up_for_3_minutes(node: Node) -> None:
    figures = run_containment(node, hold=180.0)
    print(f"containment soak (180 s): {figures}")


def test_a_held_xtables_lock_does_not_delay_a_new_pods_route(node: Node, tmp_path: Path) -> None:
    """The legacy backend takes the xtables lock (here a private lock file, so nothing else on the host
    waits); while a process holds it, iptables-restore --wait blocks, and the route side goes on. (The nft
    backend takes no xtables lock at all: iptables-nft-restore --wait returns at once while it is held.)"""
    lock_path = tmp_path / "xtables.lock"
    lock_path.touch()
    add_pod(node, "a", "10.65.0.2", "open")
    node.write_affinity("10.65.0.0/26")
    put_zero_prefix_policies(node)
    node.start_agent(L3NET_IPTABLES_BACKEND="legacy", XTABLES_LOCKFILE=str(lock_path))
    wait_for(node.ready, timeout=30, what="readiness")
    assert ":l3n-FORWARD" in netns.run(node.ns, ["iptables-legacy-save", "-t", "filter"]).stdout
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a stuck iptables process does
        t0 = time.monotonic()
        add_pod(node, "c", "10.65.0.4", "open")
        wait_for(lambda: f"10.65.0.4 dev calic proto {P} scope link metric 1024" in routes(node.ns, P),
                 timeout=30, what="the new pod's route while the xtables lock is held")
        took = time.monotonic() - t0
        # The policy side is blocked behind the lock (an iptables-legacy-restore child waits on it) and
        # stays so: c has no chains (its traffic drops at dispatch) for a window well past the route's time.
        wait_for(lambda: "iptables-legacy-restore" in children(node.proc.pid), timeout=30,  # type: ignore[union-attr]
                 what="the agent's iptables-legacy-restore waiting on the lock")
        time.sleep(max(2.0, 3 * took))
        save = netns.run(node.ns, ["iptables-legacy-save", "-t", "filter"]).stdout
        assert "l3n-tw-calic" not in save
        assert "iptables-legacy-restore" in children(node.proc.pid)  # type: ignore[union-attr]
        assert node.proc is not None and node.proc.poll() is None
        print(f"new pod's route with the xtables lock held: {took:.2f} s")
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    wait_for(lambda: "l3n-tw-calic" in netns.run(node.ns, ["iptables-legacy-save", "-t", "filter"]).stdout,
             timeout=30, what="the policy side catching up once the lock is released")
    wait_for(lambda: reaches(node.workloads["a"], "10.65.0.4"), timeout=30, what="new pod c reachable and policed")
