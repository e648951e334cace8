"""l3net-cni through the node agent's socket (the fast path) and without it (the fallback), with real parts.

Two node namespaces joined by a veth (``cni_rig``), a real etcd, a real ``l3net agent`` process serving
CNI requests in node-1, and the ``l3net-cni`` entry point run as a runtime runs it. Also the DEL race:
a DEL for an old container must leave a newer container of the same pod (same host veth name) alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.cni_rig import CNIRig, make_rig
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]

L3NET = str(Path(sys.executable).with_name("l3net"))


class Agent:
    """A real ``l3net agent`` in one rig node (BGP off), serving CNI requests on ``sock``."""

    def __init__(self, rig: CNIRig, node: str, run_dir: Path) -> None:
        self.sock = str(run_dir / "cni.sock")
        self.log = run_dir / f"agent-{node}.log"
        env = {**os.environ, "L3NET_ETCD_ENDPOINTS": rig.etcd_endpoints, "L3NET_ETCD_PREFIX": rig.keys.prefix,
               "L3NET_BGP_ENABLED": "false", "L3NET_RUN_DIR": str(run_dir), "L3NET_STARTUP_SWEEP_DELAY": "0",
               "L3NET_IP": f"{rig.node_ip[node]}/24"}
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(["ip", "netns", "exec", rig.nodes[node], L3NET, "agent", "--node", node],
                                         env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        rig.factory.pids.append(self.proc.pid)
        wait_for(lambda: os.path.exists(self.sock) or self.proc.poll() is not None, 30, "the agent's CNI socket")
        assert self.proc.poll() is None, self.text()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def served(self, command: str) -> int:
        return self.text().count(f"CNI {command} served")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def rig(netns_factory, etcd_server, key_layout, datastore, tmp_path) -> Iterator[CNIRig]:
    r = make_rig(netns_factory, etcd_server, key_layout, datastore, tmp_path)
    r.add_pool("pool1", "10.241.0.0/24")
    yield r


@pytest.fixture
def agent(rig: CNIRig) -> Iterator[Agent]:
    # Not under pytest's basetemp: another pytest session on this shared machine may prune old basetemps
    # (keeping the newest three) while this test runs, taking the socket file with it.
    run_dir = Path(tempfile.mkdtemp(prefix="l3net-cni-agent-"))
    a = Agent(rig, "node-1", run_dir)
    try:
        yield a
    finally:
        a.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def leftovers(rig: CNIRig) -> list[str]:
    """What the workloads left behind; the agent's blackhole for a block still affine to the node is not theirs."""
    return [x for x in rig.leftovers() if not (" route " in x and x.endswith("/26"))]


def ip_of(res) -> str:
    return res.out["ips"][0]["address"].split("/")[0]


def ping(ns_path: str, ip: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns_path.rsplit("/", 1)[1], "ping", "-c", "1", "-W", "5", ip],
                          capture_output=True, text=True)


def test_add_through_the_agent_pings_a_pod_on_another_node_then_fallback_when_the_agent_dies(
        rig: CNIRig, agent: Agent, tmp_path: Path) -> None:
    fast = rig.conf("node-1", agentSocket=agent.sock)
    a_ns, b_ns, c_ns = rig.pod_ns("pa"), rig.pod_ns("pb"), rig.pod_ns("pc")
    a = rig.invoke("node-1", "ADD", "ca", a_ns, pod="a", conf=fast)
    assert a.rc == 0, (a, agent.text()[-2000:])
    assert agent.served("ADD") == 1
    # node-2 has no agent: its socket path does not exist, so the plugin runs in-process there.
    b = rig.invoke("node-2", "ADD", "cb", b_ns, pod="b",
                   conf=rig.conf("node-2", agentSocket=str(tmp_path / "absent.sock")))
    assert b.rc == 0, b
    assert agent.served("ADD") == 1
    # The agent admits a new workload interface in its policy chains on its next apply (fail closed until then).
    wait_for(lambda: ping(a_ns, ip_of(b)).returncode == 0, 30, "pod a (via the agent) -> pod b on node-2")
    assert ping(b_ns, ip_of(a)).returncode == 0
    assert rig.invoke("node-1", "CHECK", "ca", a_ns, pod="a", conf={**fast, "prevResult": a.out}).rc == 0
    # An error object comes back through the socket unchanged (code 7, field named), exit status 1.
    bad = rig.invoke("node-1", "ADD", "cx", rig.pod_ns("px"), pod="x", conf={**fast, "mtu": 5})
    assert bad.rc == 1 and bad.out["code"] == 7 and "mtu" in bad.out["msg"], bad
    assert agent.served("CHECK") == 1 and agent.served("ADD") == 2, bad.stderr

    agent.kill()  # a stale socket file stays: connect is refused, nothing was sent -> in-process
    assert os.path.exists(agent.sock)
    c = rig.invoke("node-1", "ADD", "cc", c_ns, pod="c", conf=fast)
    assert c.rc == 0, c
    assert "running the plugin in-process" in c.stderr
    # The agent's policy chains (left in place by the killed agent) drop an interface it does not know yet;
    # a restarted agent replaces the stale socket, adopts the new workload, and serves again.
    again = Agent(rig, "node-1", Path(agent.sock).parent)
    try:
        wait_for(lambda: ping(c_ns, ip_of(b)).returncode == 0, 30, "pod c -> pod b")
        assert rig.invoke("node-1", "DEL", "ca", a_ns, pod="a", conf=fast).rc == 0
        assert rig.invoke("node-1", "DEL", "cc", c_ns, pod="c", conf=fast).rc == 0
        assert again.served("DEL") == 2
    finally:
        again.stop()
    assert rig.invoke("node-2", "DEL", "cb", b_ns, pod="b", conf=rig.conf("node-2", agentSocket="")).rc == 0
    assert leftovers(rig) == []


def agent_metric(rig: CNIRig, node: str, sample: str) -> float:
    """One sample of the agent's Prometheus metrics (served on :9091 inside the node's namespace); 0 if absent."""
    code = ("import urllib.request; "
            "print(urllib.request.urlopen('http://127.0.0.1:9091/metrics', timeout=5).read().decode())")
    text = subprocess.run(["ip", "netns", "exec", rig.nodes[node], sys.executable, "-c", code],
                          capture_output=True, text=True, check=True).stdout
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(sample + " ")]
    return float(values[0]) if values else 0.0


def test_add_with_policy_setup_timeout_returns_a_pod_whose_first_packet_passes(
        rig: CNIRig, agent: Agent, tmp_path: Path) -> None:
    """policy_setup_timeout_seconds: the agent holds the ADD result until its own apply has programmed the new pod
    (route and policy chains), so the first packet the pod sends is not dropped as from an unknown interface."""
    b_ns = rig.pod_ns("pb")
    b = rig.invoke("node-2", "ADD", "cb", b_ns, pod="b", conf=rig.conf("node-2", agentSocket=str(tmp_path / "none")))
    assert b.rc == 0, b
    waiting = rig.conf("node-1", agentSocket=agent.sock, policy_setup_timeout_seconds=10)
    for i in range(4):
        ns = rig.pod_ns(f"w{i}")
        res = rig.invoke("node-1", "ADD", f"cw{i}", ns, pod=f"w{i}", conf=waiting)
        assert res.rc == 0, (res, agent.text()[-2000:])
        host_if = res.out["interfaces"][0]["name"]
        rules = subprocess.run(["ip", "netns", "exec", rig.nodes["node-1"], "iptables-save", "-t", "filter"],
                               capture_output=True, text=True, check=True).stdout
        assert f":l3n-tw-{host_if} " in rules and f":l3n-fw-{host_if} " in rules, host_if
        first = subprocess.run(["ip", "netns", "exec", ns.rsplit("/", 1)[1], "ping", "-c", "1", "-W", "5", ip_of(b)],
                               capture_output=True, text=True)
        assert first.returncode == 0, (i, first.stdout)
    sample = 'l3net_cni_policy_setup_seconds_count{result="programmed"}'
    assert agent_metric(rig, "node-1", sample) == 4
    assert agent_metric(rig, "node-1", 'l3net_cni_policy_setup_seconds_count{result="timeout"}') == 0
    for i in range(4):
        assert rig.invoke("node-1", "DEL", f"cw{i}", rig.pod_ns(f"w{i}"), pod=f"w{i}", conf=waiting).rc == 0
    assert rig.invoke("node-2", "DEL", "cb", b_ns, pod="b", conf=rig.conf("node-2", agentSocket="")).rc == 0
    assert leftovers(rig) == []


def test_concurrent_adds_through_the_agent_get_distinct_addresses_in_one_block(rig: CNIRig, agent: Agent) -> None:
    from concurrent.futures import ThreadPoolExecutor

    fast = rig.conf("node-1", agentSocket=agent.sock)
    pods = [(f"k{i}", rig.pod_ns(f"k{i}")) for i in range(12)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: rig.invoke("node-1", "ADD", p[0], p[1], pod=p[0], conf=fast), pods))
    assert all(r.rc == 0 for r in results), [r for r in results if r.rc][:2]
    assert len({ip_of(r) for r in results}) == 12
    assert len([b for b in rig.ipam.blocks() if b.node == "node-1"]) == 1
    assert agent.served("ADD") == 12, [r.stderr.split("\n")[0] for r in results]
    with ThreadPoolExecutor(8) as pool:
        dels = list(pool.map(lambda p: rig.invoke("node-1", "DEL", p[0], p[1], pod=p[0], conf=fast), pods))
    assert all(r.rc == 0 for r in dels)
    assert leftovers(rig) == []


@pytest.mark.parametrize("old_netns", ["kept", "deleted"])
def test_del_of_an_old_container_leaves_the_newer_containers_veth(rig: CNIRig, old_netns: str) -> None:
    """Same pod, two containers: the newer ADD replaced the host veth of the same name; the old DEL must not
    take it (it removes the pair from the old container's own namespace, where nothing is left)."""
    old_ns, new_ns = rig.pod_ns("old"), rig.pod_ns("new")
    assert rig.invoke("node-1", "ADD", "c-old", old_ns, pod="db-0").rc == 0
    new = rig.invoke("node-1", "ADD", "c-new", new_ns, pod="db-0")
    assert new.rc == 0, new
    host_if = new.out["interfaces"][0]["name"]
    index = rig.links("node-1")[host_if]["index"]
    if old_netns == "deleted":
        subprocess.run(["ip", "netns", "del", old_ns.rsplit("/", 1)[1]], check=True)
    assert rig.invoke("node-1", "DEL", "c-old", old_ns, pod="db-0").rc == 0
    assert rig.links("node-1").get(host_if, {}).get("index") == index, "the newer container's veth was removed"
    assert rig.our_routes("node-1").get(f"{ip_of(new)}/32") == index
    # The newer container's wiring works: its node reaches it (a pod may not open connections to its node,
    # DefaultEndpointToHostAction Drop, but the replies to the node's own pings come back).
    assert ping(f"/run/netns/{rig.nodes['node-1']}", ip_of(new)).returncode == 0
    assert rig.ipam.handle_ips(f"{rig.network}.c-old") == []
    assert rig.invoke("node-1", "DEL", "c-new", new_ns, pod="db-0").rc == 0
    assert leftovers(rig) == []
