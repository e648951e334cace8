"""A real CNI ADD through a real agent (ExaBGP, meshed with a second agent) leaves a complete stage trace.

``l3net-cni`` (the shim) hands the ADD to n1's agent, which claims a static address in a /26 no node
holds yet; the agent installs the block's blackhole and announces it, and n2 installs it. The trace
at ``/debug/traces`` on n1's health server must have every stage, in path order, none negative, the
new block's own branch (claim -> announce) in order too, the policy side's branch (endpoint delivered ->
ipsets and iptables applied) in order after the endpoint's delivery, and ``l3net_add_stage_seconds`` must
have counted them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from felix.addtrace import BLOCK_STAGES, POLICY_STAGES, STAGES
from l3net.constants import HEALTH_PORT, METRICS_PORT, ROUTE_PROTO
from l3net.datastore import EtcdDatastore
from l3net.keys import KeyLayout
from l3net.lab.etcdserver import EtcdServer
from tests.netns.cni_rig import CNI_BIN
from tests.netns.felix_rig import bgp_pair, routes
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]


def cni_add(node_ns: str, sock: Path, endpoint: str, keys: KeyLayout, node: str, cid: str, pod_ns: str,
            ip: str, lock_dir: Path) -> subprocess.CompletedProcess[bytes]:
    conf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "l3net-cni", "etcd_endpoints": endpoint,
            "etcd_prefix": keys.prefix, "nodename": node, "mtu": 0, "log_level": "info",
            "ipam": {"type": "l3net-ipam"}, "agentSocket": str(sock), "args": {"cni": {"ips": [ip]}}}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid,
           "CNI_NETNS": f"/run/netns/{pod_ns}", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={cid}",
           "L3NET_CNI_LOCK_DIR": str(lock_dir)}
    return subprocess.run(["ip", "netns", "exec", node_ns, CNI_BIN], input=json.dumps(conf).encode(), env=env,
                          capture_output=True, timeout=60)


def test_a_real_add_through_the_agent_is_traced_through_every_stage(
        netns_factory, etcd_server: EtcdServer, datastore: EtcdDatastore, key_layout: KeyLayout,
        tmp_path: Path) -> None:
    with bgp_pair(netns_factory, etcd_server, datastore, key_layout, tmp_path) as (n1, n2, _w1):
        sock = n1.run_dir / "cni.sock"
        wait_for(sock.exists, timeout=30, what="n1's CNI socket")
        lock_dir = tmp_path / "locks"
        lock_dir.mkdir()
        res = cni_add(n1.ns, sock, f"unix://{etcd_server.socket_path}", key_layout, "n1", "ctrace1",
                      netns_factory("ptr"), "10.65.0.130", lock_dir)
        assert res.returncode == 0, (res.stdout, res.stderr, n1.log()[-3000:])
        assert "in-process" not in res.stderr.decode()  # the agent served it: the trace is the agent's
        # the new block reaches the other node's kernel (the announce was real)
        wait_for(lambda: any(r.startswith("10.65.0.128/26 via 10.0.0.1") for r in routes(n2.ns, ROUTE_PROTO)),
                 timeout=30, what="n1's new block learned on n2")

        def finished() -> list[dict]:
            code, body = n1.http(HEALTH_PORT, "/debug/traces")
            assert code == 200, body
            return [t for t in json.loads(body)["finished"] if t["id"] == "ctrace1"]
        wait_for(lambda: bool(finished()), timeout=30, what="the ADD's finished trace")
        (trace,) = finished()
        assert trace["complete"]
        assert [s["stage"] for s in trace["stages"]] == list(STAGES), trace
        assert all(s["seconds"] >= 0 for s in trace["stages"]), trace
        ats = [s["at_s"] for s in trace["stages"]]
        assert ats == sorted(ats) and ats[-1] == pytest.approx(trace["total_s"], abs=1e-5), trace
        assert trace["key"].endswith("/n1-k8s-ctrace1-eth0"), trace
        # the shim's stamp was the origin: its start precedes the agent's first mark
        assert trace["stages"][0]["stage"] == "cni_start" and trace["stages"][0]["seconds"] > 0, trace

        # the new block was claimed by this ADD: its own branch, from the claim to its announce, in order
        block = trace["block"]
        assert [s["stage"] for s in block] == list(BLOCK_STAGES), trace
        block_ats = [s["at_s"] for s in block]
        assert block_ats == sorted(block_ats) and block_ats[0] >= 0, trace

        # the policy side's branch: from the endpoint's delivery to its chains in n1's kernel
        wait_for(lambda: finished()[0]["policy_complete"], timeout=30, what="the ADD's policy branch")
        (trace,) = finished()
        policy = trace["policy"]
        assert [s["stage"] for s in policy] == list(POLICY_STAGES), trace
        assert all(s["seconds"] >= 0 for s in policy), trace
        delivered = next(s["at_s"] for s in trace["stages"] if s["stage"] == "watch_delivery")
        policy_ats = [s["at_s"] for s in policy]
        assert policy_ats == sorted(policy_ats) and policy_ats[0] >= delivered, trace
        iface = json.loads(res.stdout)["interfaces"][0]["name"]
        filter_rules = subprocess.run(["ip", "netns", "exec", n1.ns, "iptables-save", "-t", "filter"],
                                      capture_output=True, text=True, check=True).stdout
        assert f"l3n-fw-{iface}" in filter_rules, filter_rules[-2000:]

        metrics = n1.http(METRICS_PORT, "/metrics")[1]
        for stage in (*STAGES, *(f"policy_{s}" for s in POLICY_STAGES)):
            assert f'l3net_add_stage_seconds_count{{stage="{stage}"}} 1.0' in metrics, (stage, metrics[-2000:])
