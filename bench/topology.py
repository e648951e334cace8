"""bench.topology: two nodes and their workloads in namespaces, wired the way Calico wires them.

A node is a namespace with ``eth0`` on a point-to-point fabric veth to the
other node. A workload is a namespace whose ``eth0`` is the peer of a host
veth ``cali<11 hex>`` in its node: ``/32`` address, ``169.254.1.1`` scope-link
gateway, ``proxy_arp`` and ``proxy_delay=0`` on the host side, a ``/32``
scope-link host route (protocol 76), MAC ``ee:ee:ee:ee:ee:ee``. This is what
``l3net-cni`` does; :func:`wire_workload` does it directly (the dataplane
benchmark uses the real plugin instead when it is importable).

Everything is created through ``ip -n``/``ethtool`` inside the workspace's own
namespaces; nothing touches the root namespace.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.framework import Workspace
from l3net import constants, netns
from l3net.model.validation import host_veth_name

_log = logging.getLogger(__name__)


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip -n NS ...`` with a clear error on failure."""
    cmd = ["ip", "-n", ns, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return out


def ip_batch(ns: str, lines: Sequence[str]) -> None:
    """Many ``ip`` commands in one process (``ip -n NS -batch -``)."""
    out = subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n", capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"ip -n {ns} -batch failed: {out.stderr.strip()[:500]}")


@dataclass
class Node:
    name: str  # short name inside the topology: n1, n2
    ns: str
    fabric_ip: str  # on eth0, /24
    veths: list[str] = field(default_factory=list)  # every veth end in this namespace


@dataclass
class Workload:
    name: str
    ns: str
    node: Node
    ip: str
    host_if: str
    mtu: int | None = None


def node_pair(ws: Workspace, subnet: str = "10.99.0", prefix: str = "n") -> tuple[Node, Node]:
    """Two nodes joined back to back on ``eth0`` (the fabric), forwarding on, default via an absent gateway.

    The default route matters: proxy ARP answers for 169.254.1.1 only when
    the node has a unicast route covering it (testbed-facts §3). ``prefix`` names the
    namespaces (``<tag><prefix>1``, ``<tag><prefix>2``), so one run can hold several pairs.
    """
    n1 = Node("n1", ws.netns(f"{prefix}1"), f"{subnet}.11")
    n2 = Node("n2", ws.netns(f"{prefix}2"), f"{subnet}.12")
    tmp_a, tmp_b = f"{ws.tag}{prefix}fa", f"{ws.tag}{prefix}fb"
    ip(n1.ns, "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b, "netns", n2.ns)
    for node, tmp in ((n1, tmp_a), (n2, tmp_b)):
        ip(node.ns, "link", "set", tmp, "name", "eth0")
        ip(node.ns, "addr", "add", f"{node.fabric_ip}/24", "dev", "eth0")
        ip(node.ns, "link", "set", "eth0", "up")
        ip(node.ns, "route", "add", "default", "via", f"{subnet}.1")
        netns.write_sysctl("net.ipv4.ip_forward", 1, netns=node.ns)
        node.veths.append("eth0")
    return n1, n2


def wire_workload(ws: Workspace, node: Node, name: str, addr: str, *, mtu: int | None = None,
                  k8s_namespace: str = "bench", host_prefix: str = "") -> Workload:
    """A workload namespace wired to ``node`` exactly as l3net-cni (and Calico's CNI) wires it.

    ``host_prefix`` replaces the host veth's ``cali`` (same length): felix's chains match ``cali+``, so such a
    workload's packets take the same wiring and routes but none of felix's rules.
    """
    wl_ns = ws.netns(name)
    host_if = host_veth_name(k8s_namespace, f"{ws.tag}-{name}")
    if host_prefix:
        host_if = host_prefix + host_if[len(host_prefix):]
    ip(node.ns, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", wl_ns)
    ip(node.ns, "link", "set", host_if, "address", constants.WORKLOAD_HOST_MAC)
    if mtu:
        ip(node.ns, "link", "set", host_if, "mtu", str(mtu))
        ip(wl_ns, "link", "set", "eth0", "mtu", str(mtu))
    netns.write_sysctl(f"net/ipv4/conf/{host_if}/proxy_arp", 1, netns=node.ns)
    netns.write_sysctl(f"net/ipv4/neigh/{host_if}/proxy_delay", 0, netns=node.ns)
    ip(node.ns, "link", "set", host_if, "up")
    ip(wl_ns, "addr", "add", f"{addr}/32", "dev", "eth0")
    ip(wl_ns, "link", "set", "eth0", "up")
    gw = constants.WORKLOAD_GATEWAY_V4
    ip(wl_ns, "route", "add", gw, "dev", "eth0", "scope", "link")
    ip(wl_ns, "route", "add", "default", "via", gw, "dev", "eth0")
    # Same route as l3net.cni.dataplane.setup: scope link, our protocol, the workload metric.
    ip(node.ns, "route", "add", f"{addr}/32", "dev", host_if, "scope", "link", "proto", str(constants.ROUTE_PROTO),
       "metric", str(constants.WORKLOAD_ROUTE_METRIC))
    node.veths.append(host_if)
    return Workload(name=name, ns=wl_ns, node=node, ip=addr, host_if=host_if, mtu=mtu)


def route_block(node: Node, local_block: str, remote_block: str, via: str, dev: str | None = None) -> None:
    """What BGP would install: a blackhole for our own block, the peer's block via its address."""
    proto = str(constants.ROUTE_PROTO)
    ip(node.ns, "route", "replace", "blackhole", local_block, "proto", proto)
    args = ["route", "replace", remote_block, "via", via, "proto", proto]
    if dev:
        args += ["dev", dev, "onlink"]
    ip(node.ns, *args)


FLANNEL_VNI = 1  # Flannel's vxlan backend default VNI
FLANNEL_PORT = 8472  # Flannel passes Port 0, so the kernel's default UDP port applies: 8472 (not IANA's 4789)
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8: Flannel sets flannel.1 MTU = uplink MTU - 50


def vxlan_pair(n1: Node, n2: Node, *, subnet: str = "10.98.0", uplink_mtu: int = 1500) -> dict[str, str]:
    """A VXLAN device on each node, set up the way Flannel's vxlan backend does it.

    Flannel (pkg/backend/vxlan): ``flannel.<VNI>`` with VNI 1, the kernel's default port
    (8472), ``nolearning``, no ``remote``/group, MTU = uplink MTU - 50, local = the node's
    address on the uplink, a /32 on the device, and per peer node a permanent ARP entry
    (peer VTEP address -> peer VTEP MAC), a permanent FDB entry (peer VTEP MAC -> peer
    node address) and the peer's block routed ``via <peer VTEP address> dev flannel.1
    onlink`` (see :func:`route_block`). UDP checksums are left at the kernel default, as
    Flannel leaves them. The device is called ``vxlan0`` here. Returns node name -> its VTEP
    address.
    """
    addrs: dict[str, str] = {}
    macs: dict[str, str] = {}
    for me, host in ((n1, 11), (n2, 12)):
        ip(me.ns, "link", "add", "vxlan0", "mtu", str(uplink_mtu - VXLAN_OVERHEAD), "type", "vxlan",
           "id", str(FLANNEL_VNI), "local", me.fabric_ip, "dev", "eth0", "dstport", str(FLANNEL_PORT), "nolearning")
        ip(me.ns, "addr", "add", f"{subnet}.{host}/32", "dev", "vxlan0")
        ip(me.ns, "link", "set", "vxlan0", "up")
        addrs[me.name] = f"{subnet}.{host}"
        macs[me.name] = _link_mac(me.ns, "vxlan0")
    for me, peer in ((n1, n2), (n2, n1)):
        ip(me.ns, "neigh", "replace", addrs[peer.name], "lladdr", macs[peer.name], "dev", "vxlan0", "nud", "permanent")
        out = subprocess.run(["bridge", "-n", me.ns, "fdb", "append", macs[peer.name], "dev", "vxlan0",
                              "dst", peer.fabric_ip, "self", "permanent"], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"bridge fdb append in {me.ns} failed: {out.stderr.strip()}")
    return addrs


def _link_mac(ns: str, ifname: str) -> str:
    return str(json.loads(ip(ns, "-j", "link", "show", ifname).stdout)[0]["address"])


OFFLOADS = {"tso": "tcp-segmentation-offload", "gso": "generic-segmentation-offload",
            "gro": "generic-receive-offload"}


def get_offloads(ns: str, ifname: str) -> dict[str, bool]:
    """TSO, GSO and GRO state of one interface (``ethtool -k``)."""
    out = netns.run(ns, ["ethtool", "-k", ifname], check=False)
    if out.returncode != 0:
        raise RuntimeError(f"ethtool -k {ifname} in {ns} failed: {out.stderr.strip()}")
    state = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line)
    return {short: state[long].split()[0] == "on" for short, long in OFFLOADS.items()}


def set_offloads(ns: str, ifname: str, state: bool | dict[str, bool]) -> None:
    """TSO, GSO and GRO on or off on one interface (``ethtool -K``); a dict sets each one."""
    wanted = state if isinstance(state, dict) else dict.fromkeys(OFFLOADS, state)
    args = [tok for key, on in wanted.items() for tok in (key, "on" if on else "off")]
    out = netns.run(ns, ["ethtool", "-K", ifname, *args], check=False)
    if out.returncode != 0:
        raise RuntimeError(f"ethtool -K {ifname} in {ns} failed: {out.stderr.strip()}")
