"""Issue 13, findings 3 and 6 with the real agent: a WorkloadEndpoint written straight into etcd cannot
hijack the node, and a pod cannot reach its node unless DefaultEndpointToHostAction says so (live)."""

from __future__ import annotations

import json
import subprocess

import pytest

from felix.config import config_key
from l3net import netns
from l3net.constants import ROUTE_PROTO
from l3net.model.validation import workload_endpoint_name
from tests.netns.felix_rig import Node, routes
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]

P = ROUTE_PROTO


def metrics(node: Node) -> dict[str, float]:
    code, text = node.http(9091, "/metrics")
    assert code == 200
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def raw_wep(node: Node, pod: str, iface: str, nets: list[str]) -> None:
    """Written straight into etcd, as anyone with datastore access could: no validator on the way."""
    name = workload_endpoint_name(node.name, pod, "eth0")
    doc = {"apiVersion": "l3net.io/v1", "kind": "WorkloadEndpoint",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"node": node.name, "orchestrator": "k8s", "pod": pod, "endpoint": "eth0",
                    "interfaceName": iface, "ipNetworks": nets}}
    node.ds.put(node.keys.resource("workloadendpoints", name, "default"), json.dumps(doc).encode())


def ping(src_ns: str, dst: str, expect: bool) -> bool:
    cmd = ["ip", "netns", "exec", src_ns, "ping", "-c", "2", "-i", "0.2", "-W", "3" if expect else "1", dst]
    return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0


def test_raw_hijacking_endpoints_get_no_route_proxy_arp_or_policy(node: Node) -> None:
    node.add_workload("a", "10.65.0.2")
    node.add_workload("o", "192.168.7.7", write_wep=False)  # an interface exists for the stray endpoint
    raw_wep(node, "hijack", "eth0", ["0.0.0.0/1", "128.0.0.0/1"])
    raw_wep(node, "wild", "cali+", ["10.65.0.9/32"])
    raw_wep(node, "o", "calio", ["192.168.7.7/32"])  # a workload interface, but no pool covers the address
    proxy_arp_before = netns.read_sysctl("net/ipv4/conf/eth0/proxy_arp", node.ns)
    node.start_agent()
    legit = {f"10.65.0.2 dev calia proto {P} scope link metric 1024"}
    wait_for(lambda: routes(node.ns, P) == legit, what="the legitimate workload's route only")
    samples = wait_for(lambda: (m := metrics(node)).get("l3net_rejected_local_endpoints") == 1 and m,
                       what="the rejected endpoint counted")
    assert samples["l3net_datastore_invalid_values"] == 2  # eth0 and cali+ fail validation: absent
    assert samples["l3net_active_local_endpoints"] == 1
    assert routes(node.ns, P) == legit  # computed by the same apply that counted the rejection
    assert netns.read_sysctl("net/ipv4/conf/eth0/proxy_arp", node.ns) == proxy_arp_before
    assert netns.read_sysctl("net/ipv4/conf/calio/proxy_arp", node.ns) == "0"
    # The policy side applies on its own (it does not wait for the routes): wait for its first apply.
    filter_save = wait_for(lambda: (t := netns.run(node.ns, ["iptables-save", "-t", "filter"]).stdout)
                           and any(ln.startswith("-A l3n-INPUT -i cali+ ") and ln.endswith("-j l3n-wl-to-host")
                                   for ln in t.splitlines()) and t, what="the policy side's first apply")
    assert "-i eth0" not in filter_save and "-i calio " not in filter_save and "cali++" not in filter_save
    log = node.log()
    assert "addresses outside every IPPool" in log and "192.168.7.7/32" in log
    # A pool for the stray address: the endpoint is programmed (it was skipped, not forgotten).
    node.ensure_pool("192.168.7.7")
    wait_for(lambda: f"192.168.7.7 dev calio proto {P} scope link metric 1024" in routes(node.ns, P),
             what="the endpoint once a pool covers it")
    wait_for(lambda: metrics(node).get("l3net_rejected_local_endpoints") == 0, what="the gauge back to 0")
    assert node.proc is not None and node.proc.poll() is None


def test_pod_reaches_pods_not_its_node_unless_the_setting_says_so(node: Node) -> None:
    node.add_workload("a", "10.65.0.2")
    node.add_workload("b", "10.65.0.3")
    node.start_agent()
    wait_for(node.ready, what="readiness")
    wait_for(lambda: "l3n-wl-to-host" in netns.run(node.ns, ["iptables-save", "-t", "filter"]).stdout,
             what="the workload-to-host chain")
    pod = node.workloads["a"]
    assert ping(pod, "10.65.0.3", True)          # another pod: allowed
    assert not ping(pod, node.address, False)    # its node: Drop by default
    assert not ping(pod, "169.254.1.1", False)   # nor the gateway address the node answers for
    # Live from the datastore: Accept lets it in, removing the key restores Drop.
    key = config_key(node.keys, "global", "DefaultEndpointToHostAction")
    node.ds.put(key, b"Accept")
    wait_for(lambda: ping(pod, node.address, True), timeout=30, what="node reachable with Accept")
    node.ds.delete(key)
    wait_for(lambda: not ping(pod, node.address, False), timeout=30, what="node unreachable again")
    assert ping(pod, "10.65.0.3", True)
    # Replies to what the node opens still reach it (kubelet-style probes).
    assert ping(node.ns, "10.65.0.2", True)
