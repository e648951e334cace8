"""A node namespace with workloads and a real ``l3net agent`` process, for felix's netns tests.

Built on it: two meshed agents with BGP (``bgp_pair``), and an "external" host behind a node's router
that answers on ``MEMBER_IP`` and ``NON_MEMBER_IP`` (``external_host``), with the checks the policy
tests make against it (``reaches``, ``our_rules``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from l3net import netns
from l3net.constants import ROUTE_PROTO
from l3net.datastore import EtcdDatastore
from l3net.keys import KeyLayout
from l3net.lab.etcdserver import EtcdServer
from l3net.model.resource import Resource
from l3net.model.validation import workload_endpoint_name
from tests.route_monitor import RouteMonitor
from tests.waiting import wait_for

__all__ = ["MEMBER_IP", "NON_MEMBER_IP", "Node", "Pinger", "RouteMonitor", "bgp_pair", "external_host", "our_rules",
           "reaches", "routes"]

REPO = Path(__file__).resolve().parents[2]
L3NET = str(Path(sys.executable).with_name("l3net"))

# the external host's addresses: one a policy's network set holds, one it never holds
MEMBER_IP = "192.0.2.2"
NON_MEMBER_IP = "192.0.2.3"


def routes(ns: str, proto: int | None = None) -> set[str]:
    out = netns.run(ns, ["ip", "-4", "route", "show", "table", "main"]).stdout
    lines = {" ".join(x.split()) for x in out.replace("\n\t", " ").splitlines() if x.strip()}
    if proto is None:
        return lines
    return {x for x in lines if f"proto {proto} " in x + " "}


class Node:
    """One node namespace (eth0 10.0.0.1/24 towards a router namespace), its workloads and its agent."""

    def __init__(self, factory: Any, ds: EtcdDatastore, keys: KeyLayout, endpoint: str, run_dir: Path,
                 name: str = "n1", address: str = "10.0.0.1", router: str | None = None) -> None:
        self.factory = factory
        self.ds = ds
        self.keys = keys
        self.endpoint = endpoint
        self.run_dir = run_dir
        self.name = name
        self.address = address
        self.ns = factory("nd" + name[-1])
        if router is None:
            # The node's L2 segment: a bridge in its own namespace, 10.0.0.254 as the default gateway.
            router = factory("rr")
            netns.run(router, ["ip", "link", "add", "br0", "type", "bridge"])
            netns.run(router, ["ip", "addr", "add", "10.0.0.254/24", "dev", "br0"])
            netns.run(router, ["ip", "link", "set", "br0", "up"])
        self.router = router
        factory.veth(self.ns, "eth0", router, f"p{name}")
        netns.run(router, ["ip", "link", "set", f"p{name}", "master", "br0"])
        netns.run(self.ns, ["ip", "addr", "add", f"{address}/24", "dev", "eth0"])
        # A foreign default route (it also covers 169.254.1.1, which proxy ARP needs).
        netns.run(self.ns, ["ip", "route", "add", "default", "via", "10.0.0.254"])
        self.workloads: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = run_dir / f"agent-{name}.log"
        self.env: dict[str, str] = {}

    # -- workloads (wired the way the CNI plugin wires them) ---------------------------
    def add_workload(self, pod: str, ip: str, write_wep: bool = True) -> str:
        iface = f"cali{pod}"[:15]
        wns = self.factory("w" + self.name[-1] + pod)
        self.factory.veth(self.ns, iface, wns, "eth0")
        netns.run(self.ns, ["ip", "link", "set", iface, "address", "ee:ee:ee:ee:ee:ee"])
        netns.run(wns, ["ip", "addr", "add", f"{ip}/32", "dev", "eth0"])
        netns.run(wns, ["ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"])
        netns.run(wns, ["ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"])
        self.workloads[pod] = wns
        if write_wep:
            self.write_wep(pod, ip, iface)
        return wns

    def wep_key(self, pod: str) -> str:
        return self.keys.resource("workloadendpoints", workload_endpoint_name(self.name, pod, "eth0"), "default")

    def ensure_pool(self, ip: str) -> None:
        """An IPPool covering ``ip``'s /16 (the agent routes pool addresses only), disabled so that
        the CNI plugin never allocates from it."""
        cidr = str(ipaddress.ip_network(f"{ip}/16", strict=False))
        name = "rig-" + cidr.split("/")[0].replace(".", "-")
        res = Resource(kind="IPPool", name=name, spec={"cidr": cidr, "blockSize": 26, "disabled": True})
        self.ds.put(self.keys.resource("ippools", name), res.to_json())

    def write_wep(self, pod: str, ip: str, iface: str | None = None, node: str | None = None) -> None:
        self.ensure_pool(ip)
        node = node or self.name
        res = Resource(kind="WorkloadEndpoint", name=workload_endpoint_name(node, pod, "eth0"), namespace="default",
                       spec={"node": node, "orchestrator": "k8s", "pod": pod, "endpoint": "eth0",
                             "ipNetworks": [f"{ip}/32"], "interfaceName": iface or f"cali{pod}"[:15]})
        self.ds.put(self.keys.resource("workloadendpoints", res.name, "default"), res.to_json())

    def write_affinity(self, cidr: str, state: str = "confirmed", node: str | None = None) -> str:
        key = self.keys.affinity(node or self.name, cidr)
        self.ds.put(key, json.dumps({"state": state}).encode())
        return key

    # -- the agent ---------------------------------------------------------------
    def start_agent(self, **env: str) -> subprocess.Popen[bytes]:
        full_env = {**os.environ, "L3NET_ETCD_ENDPOINTS": self.endpoint, "L3NET_ETCD_PREFIX": self.keys.prefix,
                    "L3NET_BGP_ENABLED": "false", "L3NET_RUN_DIR": str(self.run_dir),
                    "L3NET_STARTUP_SWEEP_DELAY": "0", **self.env, **env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, L3NET, "--log-level", "DEBUG", "agent",
                                      "--node", self.name], env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=REPO, start_new_session=True)
        log.close()
        self.factory.pids.append(self.proc.pid)
        return self.proc

    def kill_agent(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop_agent(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def http(self, port: int, path: str) -> tuple[int, str]:
        """curl inside the node namespace: (HTTP status, body)."""
        out = netns.run(self.ns, ["curl", "-s", "-m", "5", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}"],
                        check=False).stdout
        body, _, code = out.rpartition("\n")
        return int(code or 0), body

    def ready(self) -> bool:
        return self.http(9099, "/readiness")[0] == 200

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Pinger:
    """``ping -q -i 0.005`` from one workload to an address; counts sent and received at the end.

    Nominal 200 pps, so the real rate stays above the issue's 50 pps on a loaded machine
    (sleeps overshoot: ``-i 0.01`` measured ~57 pps here under load). ``-q`` because a full
    output pipe would stall ping. :attr:`rate` is what was really sent.
    """

    def __init__(self, ns: str, target: str, factory: Any) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "ping", "-q", "-i", "0.005", "-W", "1", target],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        factory.pids.append(self.proc.pid)
        self.started = time.monotonic()
        self.rate = 0.0

    def stop(self) -> tuple[int, int]:
        elapsed = time.monotonic() - self.started
        self.proc.send_signal(signal.SIGINT)
        out = self.proc.communicate(timeout=10)[0].decode()
        for line in out.splitlines():
            if "packets transmitted" in line:
                parts = line.split(",")
                sent = int(parts[0].split()[0])
                self.rate = sent / elapsed
                return sent, int(parts[1].split()[0])
        raise AssertionError(f"no ping summary in: {out[-500:]}")


@contextlib.contextmanager
def bgp_pair(netns_factory, etcd_server: EtcdServer, datastore: EtcdDatastore, key_layout: KeyLayout,
             tmp_path: Path) -> Iterator[tuple[Node, Node, str]]:
    """Two meshed agents, each with one workload and a confirmed block, once both blocks are learned.

    Yields ``(n1, n2, w1)`` (``w1`` is the namespace of n1's workload 10.65.0.2); stops both agents
    at the end and prints the log of one that failed.
    """
    endpoint = f"unix://{etcd_server.socket_path}"
    n1 = Node(netns_factory, datastore, key_layout, endpoint, tmp_path / "n1", name="n1", address="10.0.0.1")
    n2 = Node(netns_factory, datastore, key_layout, endpoint, tmp_path / "n2", name="n2", address="10.0.0.2",
              router=n1.router)
    for n in (n1, n2):
        n.run_dir.mkdir()
        n.env = {"L3NET_BGP_ENABLED": "true", "L3NET_STARTUP_SWEEP_DELAY": "30"}
    try:
        # the pool the blocks come from: BGP import and export defaults only pass routes of pools
        pool = Resource("IPPool", "p65", {"cidr": "10.65.0.0/24"})
        datastore.put(key_layout.resource("ippools", pool.name), pool.to_json())
        w1 = n1.add_workload("a", "10.65.0.2")
        n2.add_workload("b", "10.65.0.66")
        n1.write_affinity("10.65.0.0/26")
        n2.write_affinity("10.65.0.64/26")
        n1.start_agent()
        n2.start_agent()
        wait_for(lambda: f"10.65.0.64/26 via 10.0.0.2 dev eth0 proto {ROUTE_PROTO} metric 1024"
                 in routes(n1.ns, ROUTE_PROTO), timeout=40, what="n2's block learned on n1")
        wait_for(lambda: f"10.65.0.0/26 via 10.0.0.1 dev eth0 proto {ROUTE_PROTO} metric 1024"
                 in routes(n2.ns, ROUTE_PROTO), timeout=40, what="n1's block learned on n2")
        yield n1, n2, w1
    finally:
        for n in (n1, n2):
            n.stop_agent()
            if n.proc is not None and n.proc.returncode not in (0, None):
                print(n.log()[-4000:])


def external_host(node: Node) -> str:
    """A namespace behind the node's router with both addresses; the router routes the pod CIDR to the node."""
    ext = node.factory("ex")
    node.factory.veth(node.router, "pext", ext, "eth0")
    netns.run(node.router, ["ip", "addr", "add", "192.0.2.1/24", "dev", "pext"])
    netns.run(node.router, ["ip", "route", "add", "10.65.0.0/16", "via", node.address])
    netns.write_sysctl("net.ipv4.ip_forward", 1, node.router)
    for ip in (MEMBER_IP, NON_MEMBER_IP):
        netns.run(ext, ["ip", "addr", "add", f"{ip}/24", "dev", "eth0"])
    netns.run(ext, ["ip", "route", "add", "default", "via", "192.0.2.1"])
    return ext


def reaches(pod_ns: str, ip: str) -> bool:
    # A new ping process per try: a new ICMP id, so a new conntrack entry judged by the current rules.
    return netns.run(pod_ns, ["ping", "-c", "1", "-W", "1", ip], check=False).returncode == 0


def our_rules(ns: str) -> list[str]:
    out = netns.run(ns, ["iptables-nft-save", "-t", "filter"]).stdout
    return [line for line in out.splitlines() if line.startswith("-A l3n-")]
