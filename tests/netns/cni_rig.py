"""A CNI test rig: two "node" namespaces joined by a veth, a real etcd, and ``l3net-cni`` run as a runtime runs it.

The plugin is called exactly as a container runtime calls it: a subprocess with
``CNI_*`` variables and the network configuration on stdin, inside the node's
namespace (``ip netns exec``). Everything is named with the netns factory's
unique prefix and removed by the factory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from l3net.constants import ROUTE_PROTO
from l3net.datastore import EtcdDatastore
from l3net.ipam import IPAM
from l3net.keys import KeyLayout
from l3net.model.client import ResourceClient
from l3net.model.validation import resource_from_document

VENV_BIN = Path(sys.executable).parent
CNI_BIN = str(VENV_BIN / "l3net-cni")
CTL_BIN = str(VENV_BIN / "l3netctl")
UPLINK_MTU = 1400


@dataclass
class Result:
    rc: int
    out: dict[str, Any]
    stderr: str


@dataclass
class CNIRig:
    factory: Any
    etcd_endpoints: str
    keys: KeyLayout
    ds: EtcdDatastore
    lock_dir: str = ""
    nodes: dict[str, str] = field(default_factory=dict)  # node name -> netns name
    node_ip: dict[str, str] = field(default_factory=dict)
    network: str = "k8s-pod-network"
    # The agent's CNI socket the plugin should use; "" runs the plugin in-process (no agent in these rigs).
    agent_socket: str = ""

    @property
    def ipam(self) -> IPAM:
        return IPAM(self.ds, self.keys)

    def conf(self, node: str, **extra: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": self.network, "type": "l3net-cni",
                                "etcd_endpoints": self.etcd_endpoints, "etcd_prefix": self.keys.prefix,
                                "nodename": node, "mtu": 0, "log_level": "info",
                                "ipam": {"type": "l3net-ipam"}, "agentSocket": self.agent_socket}
        conf.update(extra)
        return conf

    def pod_ns(self, suffix: str) -> str:
        return "/run/netns/" + self.factory(suffix)

    def invoke(self, node: str, command: str, cid: str = "", netns: str = "", *, ifname: str = "eth0",
               pod: str | None = None, namespace: str = "default", conf: dict[str, Any] | None = None,
               stdin: bytes | None = None, env: dict[str, str | None] | None = None) -> Result:
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command,
                   "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_PATH": "/opt/cni/bin",
                   "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod or cid}",
                   "L3NET_CNI_LOCK_DIR": self.lock_dir}
        for k, v in (env or {}).items():
            if v is None:
                environ.pop(k, None)
            else:
                environ[k] = v
        data = stdin if stdin is not None else json.dumps(conf or self.conf(node)).encode()
        proc = subprocess.run(["ip", "netns", "exec", self.nodes[node], CNI_BIN], input=data, env=environ,
                              capture_output=True, timeout=60)
        text = proc.stdout.decode().strip()
        try:
            out = json.loads(text) if text else {}
        except ValueError:
            out = {"unparsable": text}
        return Result(proc.returncode, out, proc.stderr.decode())

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "L3NET_ETCD_ENDPOINTS": self.etcd_endpoints, "L3NET_ETCD_PREFIX": self.keys.prefix}
        return subprocess.run([CTL_BIN, *args], capture_output=True, text=True, env=env, timeout=60)

    # -- kernel state of a node ------------------------------------------------------
    def links(self, node: str) -> dict[str, dict[str, Any]]:
        with IPRoute(netns=self.nodes[node]) as ipr:
            return {ln.get_attr("IFLA_IFNAME"): {"mac": ln.get_attr("IFLA_ADDRESS"), "mtu": ln.get_attr("IFLA_MTU"),
                                                 "index": ln["index"]} for ln in ipr.link("dump")}

    def cali_links(self, node: str) -> list[str]:
        return sorted(n for n in self.links(node) if n.startswith("cali"))

    def our_routes(self, node: str) -> dict[str, int]:
        """dst -> oif of every route carrying l3net's protocol number."""
        with IPRoute(netns=self.nodes[node]) as ipr:
            return {f"{r.get_attr('RTA_DST')}/{r['dst_len']}": r.get_attr("RTA_OIF")
                    for r in ipr.route("dump", family=socket.AF_INET) if r["proto"] == ROUTE_PROTO}

    def sysctl(self, node: str, path: str) -> str:
        return subprocess.run(["ip", "netns", "exec", self.nodes[node], "cat", f"/proc/sys/{path}"],
                              capture_output=True, text=True, check=True).stdout.strip()

    def leftovers(self) -> list[str]:
        """Anything an ADD may create that is still there (links, routes, IPAM records)."""
        out = []
        for node in self.nodes:
            out += [f"{node}: link {n}" for n in self.cali_links(node)]
            out += [f"{node}: route {d}" for d in self.our_routes(node)]
        report = self.ipam.check()
        out += [f"allocation {a.ip} handle {a.handle}" for a in report.allocations]
        handles, _ = self.ds.list(self.keys.handles)
        out += [f"handle {kv.key}" for kv in handles]
        weps, _ = self.ds.list(self.keys.resource_dir("workloadendpoints"))
        out += [f"endpoint {kv.key}" for kv in weps]
        return out

    def apply(self, *docs: dict[str, Any]) -> None:
        ResourceClient(self.ds, self.keys).apply([resource_from_document(d) for d in docs])

    def add_pool(self, name: str, cidr: str, block_size: int = 26) -> None:
        self.apply({"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": name},
                    "spec": {"cidr": cidr, "blockSize": block_size}})


def make_rig(factory: Any, etcd_server: Any, keys: KeyLayout, ds: EtcdDatastore, lock_dir: Path) -> CNIRig:
    """Two node namespaces ``node-1``/``node-2`` joined by a veth (10.99.0.1/.2, MTU 1400, default via each other)."""
    if shutil.which("ping") is None:
        raise RuntimeError("ping is needed")
    rig = CNIRig(factory=factory, etcd_endpoints=etcd_server.endpoints, keys=keys, ds=ds, lock_dir=str(lock_dir))
    n1, n2 = factory("n1"), factory("n2")
    factory.veth(n1, "up1", n2, "up2")
    for ns, dev, me, peer in ((n1, "up1", "10.99.0.1", "10.99.0.2"), (n2, "up2", "10.99.0.2", "10.99.0.1")):
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "mtu", str(UPLINK_MTU)], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{me}/24", "dev", dev], check=True)
        subprocess.run(["ip", "-n", ns, "route", "add", "default", "via", peer, "dev", dev], check=True)
    rig.nodes = {"node-1": n1, "node-2": n2}
    rig.node_ip = {"node-1": "10.99.0.1", "node-2": "10.99.0.2"}
    rig.apply(*({"apiVersion": "l3net.io/v1", "kind": "Node", "metadata": {"name": n}, "spec": {}}
                for n in rig.nodes))
    return rig
