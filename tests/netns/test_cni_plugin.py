"""l3net-cni end to end: called as a runtime calls it, in two node namespaces, against a real etcd."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from l3net.cni import plugin
from l3net.cni.config import parse_env, parse_netconf
from l3net.constants import ROUTE_PROTO
from l3net.model.client import ResourceClient
from l3net.model.validation import host_veth_name
from tests.netns.cni_rig import UPLINK_MTU, CNIRig, make_rig

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]


@pytest.fixture
def rig(netns_factory, etcd_server, key_layout, datastore, tmp_path) -> Iterator[CNIRig]:
    r = make_rig(netns_factory, etcd_server, key_layout, datastore, tmp_path)
    r.add_pool("pool1", "10.240.0.0/24")
    yield r


def pod_routes(netns: str) -> str:
    return subprocess.run(["ip", "-n", netns.rsplit("/", 1)[1], "-4", "route", "show"], capture_output=True,
                          text=True, check=True).stdout


def test_add_check_del_one_pod(rig: CNIRig) -> None:
    ns = rig.pod_ns("p0")
    res = rig.invoke("node-1", "ADD", "c0", ns, pod="web-0", namespace="shop",
                     conf=rig.conf("node-1", args={"cni": {"labels": [{"key": "app", "value": "web"}]}}))
    assert res.rc == 0, res
    host_if = host_veth_name("shop", "web-0")
    ip = res.out["ips"][0]["address"].split("/")[0]
    assert res.out["cniVersion"] == "1.0.0"
    assert res.out["interfaces"][0] == {"name": host_if, "mac": "ee:ee:ee:ee:ee:ee"}
    assert res.out["interfaces"][1]["sandbox"] == ns and res.out["ips"][0]["interface"] == 1
    links = rig.links("node-1")
    assert links[host_if]["mac"] == "ee:ee:ee:ee:ee:ee" and links[host_if]["mtu"] == UPLINK_MTU
    assert rig.our_routes("node-1") == {f"{ip}/32": links[host_if]["index"]}
    assert rig.sysctl("node-1", f"net/ipv4/conf/{host_if}/proxy_arp") == "1"
    assert rig.sysctl("node-1", f"net/ipv4/neigh/{host_if}/proxy_delay") == "0"
    assert rig.sysctl("node-1", "net/ipv4/ip_forward") == "1"
    routes = pod_routes(ns)
    assert f"default via 169.254.1.1 dev eth0 proto {ROUTE_PROTO}" in routes
    assert f"169.254.1.1 dev eth0 proto {ROUTE_PROTO} scope link" in routes
    wep = ResourceClient(rig.ds, rig.keys).get("WorkloadEndpoint", "node--1-k8s-web--0-eth0", "shop")
    assert wep is not None and wep.labels["app"] == "web"
    assert wep.spec["ipNetworks"] == [f"{ip}/32"] and wep.spec["interfaceName"] == host_if
    assert wep.spec["containerID"] == "c0" and wep.spec["mac"] == res.out["interfaces"][1]["mac"]
    ping = subprocess.run(["ip", "netns", "exec", ns.rsplit("/", 1)[1], "ping", "-c", "1", "-W", "5",
                           rig.node_ip["node-1"]], capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout
    conf = rig.conf("node-1", prevResult=res.out)
    assert rig.invoke("node-1", "CHECK", "c0", ns, pod="web-0", namespace="shop", conf=conf).rc == 0
    again = rig.invoke("node-1", "ADD", "c0", ns, pod="web-0", namespace="shop")  # a retried ADD
    assert again.rc == 0 and again.out["ips"] == res.out["ips"]
    assert rig.invoke("node-1", "DEL", "c0", ns, pod="web-0", namespace="shop").rc == 0
    assert rig.leftovers() == []
    assert rig.invoke("node-1", "DEL", "c0", ns, pod="web-0", namespace="shop").rc == 0  # already gone


_KV_CALL = re.compile(r'^grpc_server_handled_total\{[^}]*grpc_method="(\w+)"[^}]*grpc_service="etcdserverpb\.KV"'
                      r'[^}]*\} (\d+)', re.M)


def etcd_kv_calls(url: str) -> Counter[str]:
    """Requests etcd has served per KV method (Range = a read; Txn = a write: put, create, CAS, commit)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: Counter[str] = Counter()
    for method, n in _KV_CALL.findall(text):
        out[method] += int(n)
    return out


def test_an_add_that_claims_a_new_block_costs_two_etcd_writes(rig: CNIRig, etcd_server) -> None:
    """Issue 18: round trips per ADD, counted by etcd itself. IPAM writes the confirmed affinity, the block with
    the address and the handle in one txn, the WorkloadEndpoint is the second; the reads are the outage probe,
    the pools (IPAM's, and the endpoint validation's "addresses in a pool" check), the (absent) block and the
    endpoint's own (absent) key. Before: 5 writes (pending affinity, block, confirmation, block+handle,
    endpoint) and 8 reads."""
    assert etcd_server.tcp_endpoint
    ns = rig.pod_ns("rt")
    before = etcd_kv_calls(etcd_server.tcp_endpoint)
    res = rig.invoke("node-1", "ADD", "c-rt", ns, pod="rt-0",
                     conf=rig.conf("node-1", args={"cni": {"ips": ["10.240.0.66"]}}))
    calls = etcd_kv_calls(etcd_server.tcp_endpoint) - before
    assert res.rc == 0, res
    assert res.out["ips"][0]["address"] == "10.240.0.66/32"
    assert calls["Txn"] + calls["Put"] + calls["DeleteRange"] == 2, calls
    assert calls["Range"] <= 5, calls
    aff = rig.ds.get(rig.keys.affinity("node-1", "10.240.0.64/26"))
    assert aff is not None and json.loads(aff.value)["state"] == "confirmed"
    assert rig.invoke("node-1", "DEL", "c-rt", ns, pod="rt-0").rc == 0
    assert rig.leftovers() == []


def test_fifty_concurrent_adds_over_two_nodes_then_del_all(rig: CNIRig) -> None:
    pods = [(f"node-{1 + i % 2}", f"c{i:02d}", f"pod-{i}", rig.pod_ns(f"q{i}")) for i in range(50)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda p: rig.invoke(p[0], "ADD", p[1], p[3], pod=p[2]), pods))
    assert all(r.rc == 0 for r in results), [r for r in results if r.rc][:2]
    ips = [r.out["ips"][0]["address"].split("/")[0] for r in results]
    assert len(set(ips)) == 50
    for node in rig.nodes:
        mine = [(p, ip) for p, ip in zip(pods, ips, strict=True) if p[0] == node]
        links = rig.links(node)
        assert rig.cali_links(node) == sorted(host_veth_name("default", p[2]) for p, _ in mine)
        routes = rig.our_routes(node)
        assert routes == {f"{ip}/32": links[host_veth_name("default", p[2])]["index"] for p, ip in mine}
        assert all(links[host_veth_name("default", p[2])]["mac"] == "ee:ee:ee:ee:ee:ee" for p, _ in mine)
    # every node claimed its own block: addresses of one node share a /26, the nodes' differ
    blocks = {node: {b.cidr for b in rig.ipam.blocks() if b.node == node} for node in rig.nodes}
    assert len(blocks["node-1"]) == 1 and len(blocks["node-2"]) == 1 and blocks["node-1"] != blocks["node-2"]
    for (node, _, _, ns), _ip in zip(pods, ips, strict=True):
        ping = subprocess.run(["ip", "netns", "exec", ns.rsplit("/", 1)[1], "ping", "-c", "1", "-W", "5",
                               rig.node_ip[node]], capture_output=True, text=True)
        assert ping.returncode == 0, (ns, ping.stdout)
    check = rig.ctl("ipam", "check")
    assert check.returncode == 0, check.stdout
    with ThreadPoolExecutor(max_workers=12) as pool:
        dels = list(pool.map(lambda p: rig.invoke(p[0], "DEL", p[1], p[3], pod=p[2]), pods))
    assert all(r.rc == 0 for r in dels), [r for r in dels if r.rc][:2]
    check = rig.ctl("ipam", "check")
    assert check.returncode == 0, check.stdout
    assert "0 allocations" in check.stdout
    assert rig.leftovers() == []


def test_blocks_run_out_claiming_borrowing_and_strict_affinity(netns_factory, etcd_server, key_layout,
                                                               datastore, tmp_path) -> None:
    rig = make_rig(netns_factory, etcd_server, key_layout, datastore, tmp_path)
    rig.add_pool("tiny", "10.250.0.0/28", block_size=30)  # four blocks of four addresses
    assert rig.ctl("ipam", "configure", "--max-blocks-per-host", "1").returncode == 0

    def add(node: str, i: int) -> str:
        res = rig.invoke(node, "ADD", f"t{i}", rig.pod_ns(f"t{i}"), pod=f"t-{i}")
        assert res.rc == 0, res
        return res.out["ips"][0]["address"].split("/")[0]

    one = [add("node-1", i) for i in range(4)]          # fills node-1's only block
    two = [add("node-2", i) for i in range(4, 6)]       # node-2 claims the next block
    assert one == [f"10.250.0.{i}" for i in range(4)] and two == ["10.250.0.4", "10.250.0.5"]
    borrowed = add("node-1", 6)                         # at its limit: node-1 borrows from node-2's block
    assert borrowed == "10.250.0.6" or borrowed == "10.250.0.7"
    check = rig.ctl("ipam", "check")
    assert check.returncode == 0 and f"borrowed: {borrowed}" in check.stdout, check.stdout
    ping = subprocess.run(["ip", "netns", "exec", f"{netns_factory.tag}t6", "ping", "-c", "1", "-W", "5",
                           rig.node_ip["node-1"]], capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout

    assert rig.ctl("ipam", "configure", "--strictaffinity=true").returncode == 0
    refused = rig.invoke("node-1", "ADD", "t7", rig.pod_ns("t7"), pod="t-7")
    assert refused.rc == 1 and refused.out["code"] == 100 and "strict affinity" in refused.out["details"]
    assert rig.ipam.handle_ips("k8s-pod-network.t7") == []
    assert host_veth_name("default", "t-7") not in rig.cali_links("node-1")

    assert rig.ctl("ipam", "configure", "--max-blocks-per-host", "2").returncode == 0
    assert add("node-1", 8) == "10.250.0.8"             # now it may claim a second block
    assert sorted(str(b.cidr) for b in rig.ipam.blocks() if b.node == "node-1") == ["10.250.0.0/30",
                                                                                      "10.250.0.8/30"]
    show = rig.ctl("ipam", "show", "--show-blocks")
    assert "10.250.0.8/30" in show.stdout and "host:node-1" in show.stdout


@pytest.mark.parametrize("moment", ["before-reread", "between-read-and-delete"])
def test_del_of_old_container_keeps_the_endpoint_a_newer_add_wrote(rig: CNIRig, monkeypatch, moment: str) -> None:
    """A DEL of an old container races a newer ADD of the same pod: the newer WorkloadEndpoint survives."""
    ns = rig.pod_ns("race")
    assert rig.invoke("node-1", "ADD", "c-old", ns, pod="db-0").rc == 0
    wep_key = rig.keys.resource("workloadendpoints", "node--1-k8s-db--0-eth0", "default")
    kv = rig.ds.get(wep_key)
    assert kv is not None
    newer = json.loads(kv.value)
    newer["spec"]["containerID"] = "c-new"

    def newer_add_lands() -> None:
        rig.ds.put(wep_key, json.dumps(newer).encode())

    # The DEL runs in this process so the newer ADD's write can be placed exactly; its veth teardown is
    # skipped (this process is in the root namespace) and done by the real DEL of c-new below.
    monkeypatch.setenv("L3NET_CNI_LOCK_DIR", rig.lock_dir)
    environ = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c-old", "CNI_NETNS": ns, "CNI_IFNAME": "eth0",
               "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=db-0"}
    inv = plugin.Invocation(parse_env(environ), parse_netconf(rig.conf("node-1"), "DEL"), environ)
    try:
        if moment == "before-reread":
            monkeypatch.setattr(plugin.dataplane, "teardown_in_container", lambda *_: newer_add_lands())
        else:
            monkeypatch.setattr(plugin.dataplane, "teardown_in_container", lambda *_: None)
            real_delete = inv.ds.delete

            def delete(key: str, mod_revision: int | None = None) -> bool:
                if key == wep_key:
                    newer_add_lands()
                return real_delete(key, mod_revision)
            monkeypatch.setattr(inv.ds, "delete", delete)
        inv.delete()
    finally:
        inv.close()
    monkeypatch.undo()
    kv = rig.ds.get(wep_key)
    assert kv is not None and json.loads(kv.value)["spec"]["containerID"] == "c-new"
    assert rig.ipam.handle_ips(f"{rig.network}.c-old") == []  # the old container's address is released
    assert rig.invoke("node-1", "DEL", "c-new", ns, pod="db-0").rc == 0
    assert rig.leftovers() == []


def test_add_skips_a_malformed_affine_block_and_check_reports_it(rig: CNIRig) -> None:
    bad = "10.240.0.0/26"
    rig.ds.put(rig.keys.affinity("node-1", bad), b'{"state": "confirmed"}')
    rig.ds.put(rig.keys.block(bad), b"\x00garbage")
    ns = rig.pod_ns("mal")
    res = rig.invoke("node-1", "ADD", "c-mal", ns, pod="mal-0")
    assert res.rc == 0, res
    assert res.out["ips"][0]["address"] == "10.240.0.64/32"
    check = rig.ctl("ipam", "check")
    assert check.returncode != 0 and rig.keys.block(bad) in check.stdout, check.stdout
    assert rig.invoke("node-1", "DEL", "c-mal", ns, pod="mal-0").rc == 0
    kv = rig.ds.get(rig.keys.block(bad))
    assert kv is not None and kv.value == b"\x00garbage"  # left for the operator, not rewritten
    rig.ds.delete(rig.keys.block(bad))
    rig.ds.delete(rig.keys.affinity("node-1", bad))
    assert rig.leftovers() == []


def test_an_invalid_node_is_absent_to_ipam_and_an_invalid_endpoint_to_check_del_and_gc(rig: CNIRig) -> None:
    """Stored objects the model refuses are what the agent takes them for (absent), each logged with its reason."""
    node_key = rig.keys.resource("nodes", "node-1")
    rig.apply({"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": "zone-a"},
               "spec": {"cidr": "10.241.0.0/24", "nodeSelector": "zone == 'a'"}})
    rig.ds.put(node_key, json.dumps({"apiVersion": "l3net.io/v1", "kind": "Node",
                                     "metadata": {"name": "node-1", "labels": {"zone": "a"}},
                                     "spec": {"bgp": {"ipv4Address": "not-an-ip"}}}).encode())
    # A pool that selects by labels cannot select a Node whose labels the model refused: a CNI error object.
    zoned = rig.invoke("node-1", "ADD", "cz", rig.pod_ns("iz"), pod="zoned",
                       conf=rig.conf("node-1", ipam={"type": "l3net-ipam", "ipv4_pools": ["zone-a"]}))
    assert zoned.rc == 1 and zoned.out["code"] == 100, zoned
    assert zoned.out["msg"] == "IP address management refused the request"
    assert "no enabled IPv4 pool selects node 'node-1'" in zoned.out["details"]
    assert f"treating malformed resource as absent key={node_key}" in zoned.stderr
    assert "spec.bgp.ipv4Address" in zoned.stderr
    assert rig.leftovers() == []
    # A pool that selects every node serves it, as it serves a node with no Node resource.
    ns = rig.pod_ns("iw")
    add = rig.invoke("node-1", "ADD", "cw", ns, pod="web")
    assert add.rc == 0, add
    assert add.out["ips"][0]["address"].startswith("10.240.0.")

    wep_key = rig.keys.resource("workloadendpoints", "node--1-k8s-web-eth0", "default")
    kv = rig.ds.get(wep_key)
    assert kv is not None
    doc = json.loads(kv.value)
    doc["spec"]["interfaceName"] = "eth0"   # the model refuses it: the agent would hijack the node's own
    rig.ds.put(wep_key, json.dumps(doc).encode())
    check = rig.invoke("node-1", "CHECK", "cw", ns, pod="web", conf=rig.conf("node-1", prevResult=add.out))
    assert check.rc == 1 and check.out["code"] == 102, check
    assert "is invalid, so absent to the node agent" in check.out["details"]
    assert "spec.interfaceName" in check.out["details"]
    # DEL: an invalid endpoint is no container's, so this pod's DEL removes it with everything else.
    delete = rig.invoke("node-1", "DEL", "cw", ns, pod="web")
    assert delete.rc == 0, delete
    assert f"stored WorkloadEndpoint is invalid, treating it as no container's key={wep_key}" in delete.stderr
    assert rig.ds.get(wep_key) is None

    # GC: an invalid endpoint names no container, so it is not this stale attachment's to delete; the
    # allocation is released all the same (a stored value that is not even JSON used to fail GC with 999).
    ns = rig.pod_ns("ig")
    assert rig.invoke("node-1", "ADD", "cg", ns, pod="gone").rc == 0
    gone_key = rig.keys.resource("workloadendpoints", "node--1-k8s-gone-eth0", "default")
    rig.ds.put(gone_key, b"{not json")
    gc = rig.invoke("node-1", "GC", conf=rig.conf("node-1", cniVersion="1.1.0",
                                                  **{"cni.dev/valid-attachments": []}))
    assert gc.rc == 0, gc
    assert rig.ipam.handle_ips(f"{rig.network}.cg") == []
    assert f"key={gone_key}" in gc.stderr
    kv = rig.ds.get(gone_key)
    assert kv is not None and kv.value == b"{not json"   # left for the operator
    rig.ds.delete(gone_key)
    rig.ds.put(node_key, json.dumps({"apiVersion": "l3net.io/v1", "kind": "Node", "metadata": {"name": "node-1"},
                                     "spec": {}}).encode())
    assert rig.leftovers() == []
