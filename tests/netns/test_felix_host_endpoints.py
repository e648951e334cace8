"""Host endpoints with real traffic (issue 19): the real agent polices the node's own interface.

The node's eth0 becomes a HostEndpoint. An "external" namespace behind the node's router reaches
the node (10.0.0.1) and, through a DNAT rule of the host's own (a NodePort-like 8080 -> pod:80),
a pod. The tests show Calico's order of host endpoint policy on real packets: pre-DNAT policy
drops before DNAT and before forwarding (the FORWARD hook never counts the packet, and a
forward policy that denies 8080 cannot see it, as DNAT has already made it 80); untracked
policy lets ping through past a normal policy that would not, with no conntrack entry, and an
untracked Deny of the host's TCP still lets a failsafe service's replies out; the host is
default-deny through its host endpoint except for the failsafe ports; the host's own DNAT'd
traffic (to a "Service") meets its egress policy on the interface it really leaves by; and the
host's own rules in nat and mangle are left alone.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from l3net import netns
from l3net.model.resource import Resource
from tests.netns.felix_rig import MEMBER_IP, Node, external_host
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]

POD_IP = "10.65.0.2"
NODE_IP = "10.0.0.1"
HOST_DNAT = f"-A PREROUTING -d {NODE_IP}/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination {POD_IP}:80"
HOST_MANGLE = "-A PREROUTING -p udp -m udp --dport 9999 -j MARK --set-xmark 0x1/0xffffffff"


@contextlib.contextmanager
def listening(ns: str, *ports: int) -> Iterator[None]:
    """TCP listeners in ``ns``: the kernel completes a handshake with no accept, which is all a probe needs."""
    socks = []
    try:
        with netns.in_netns(ns):
            for port in ports:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", port))
                s.listen(64)
                socks.append(s)
        yield
    finally:
        for s in socks:
            s.close()


def connects(ns: str, ip: str, port: int, timeout: float = 1.5) -> bool:
    with netns.in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        return s.connect_ex((ip, port)) == 0
    finally:
        s.close()


def pings(ns: str, ip: str) -> bool:
    return netns.run(ns, ["ping", "-c", "1", "-W", "1", ip], check=False).returncode == 0


def put(node: Node, kind: str, plural: str, name: str, spec: dict, labels: dict | None = None) -> None:
    node.ds.put(node.keys.resource(plural, name), Resource(kind=kind, name=name, spec=spec,
                                                           labels=labels or {}).to_json())


def put_hep(node: Node) -> None:
    put(node, "HostEndpoint", "hostendpoints", "n1-eth0", {"node": "n1", "interfaceName": "eth0",
                                                           "expectedIPs": [NODE_IP]}, {"role": "edge"})


def put_gnp(node: Node, name: str, spec: dict) -> None:
    put(node, "GlobalNetworkPolicy", "globalnetworkpolicies", name, {"selector": "role == 'edge'", **spec})


def table(ns: str, name: str) -> str:
    return netns.run(ns, ["iptables-nft-save", "-t", name]).stdout


def forward_hook_packets(ns: str) -> int:
    """Packets the kernel FORWARD chain's jump to l3n-FORWARD has seen (its counter survives our rewrites)."""
    out = netns.run(ns, ["iptables-nft", "-t", "filter", "-L", "FORWARD", "-v", "-x", "-n"]).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if "l3n-FORWARD" in line)


@pytest.fixture
def edge(node: Node) -> Iterator[tuple[str, str]]:
    """(pod namespace, external namespace) with the host's own DNAT and mangle rules, and a running agent."""
    pod = node.add_workload("a", POD_IP)
    ext = external_host(node)
    node.write_affinity("10.65.0.0/26")
    netns.run(node.ns, ["iptables-nft", "-t", "nat", *HOST_DNAT.split()])
    netns.run(node.ns, ["iptables-nft", "-t", "mangle", *HOST_MANGLE.split()])
    node.start_agent()
    wait_for(node.ready, what="readiness")
    yield pod, ext
    assert HOST_DNAT in table(node.ns, "nat") and HOST_MANGLE in table(node.ns, "mangle")
    assert node.proc is not None and node.proc.poll() is None


def test_pre_dnat_deny_drops_before_dnat_and_before_forwarding(node: Node, edge: tuple[str, str]) -> None:
    pod, ext = edge
    with listening(pod, 80):
        wait_for(lambda: connects(ext, NODE_IP, 8080), timeout=30, what="the DNAT path to the pod")
        put_hep(node)
        wait_for(lambda: "-g l3n-hi-eth0" in table(node.ns, "filter"), what="the host endpoint's chains")
        assert connects(ext, NODE_IP, 8080)  # forwarded, no applyOnForward policy: allowed

        # A forward policy that denies 8080 sees the packet after DNAT (port 80): it cannot stop it.
        put_gnp(node, "fwd-deny-8080", {"applyOnForward": True, "ingress": [
            {"action": "Deny", "protocol": "TCP", "destination": {"ports": [8080]}}, {"action": "Allow"}]})
        wait_for(lambda: "l3n-hfi-eth0" in table(node.ns, "filter"), what="the forward policy")
        assert connects(ext, NODE_IP, 8080)

        # Pre-DNAT policy sees 8080 and drops it in mangle PREROUTING: FORWARD never counts it.
        put_gnp(node, "pre-deny-8080", {"preDNAT": True, "applyOnForward": True, "ingress": [
            {"action": "Deny", "protocol": "TCP", "destination": {"ports": [8080]}}]})
        wait_for(lambda: "-g l3n-hpi-eth0" in table(node.ns, "mangle"), what="the pre-DNAT chain")
        before = forward_hook_packets(node.ns)
        assert not connects(ext, NODE_IP, 8080)
        assert forward_hook_packets(node.ns) == before
        assert connects(ext, POD_IP, 80)  # the pod itself, not 8080: pre-DNAT policy has no verdict, goes on
        assert forward_hook_packets(node.ns) > before

        node.ds.delete(node.keys.resource("globalnetworkpolicies", "pre-deny-8080"))
        wait_for(lambda: "hpi" not in (t := table(node.ns, "mangle")) and "-j l3n-PREROUTING" not in t,
                 what="the pre-DNAT chains and hook removed")
        assert connects(ext, NODE_IP, 8080)


def test_host_traffic_default_deny_failsafe_and_untracked_policy(node: Node, edge: tuple[str, str]) -> None:
    _, ext = edge
    with listening(node.ns, 22, 9000):
        assert connects(ext, NODE_IP, 9000) and pings(ext, NODE_IP)
        put_hep(node)
        wait_for(lambda: not connects(ext, NODE_IP, 9000, timeout=0.5), what="the host closed by its endpoint")
        assert not pings(ext, NODE_IP)
        assert connects(ext, NODE_IP, 22)  # a failsafe port stays open

        put_gnp(node, "host-9000", {"ingress": [{"action": "Allow", "protocol": "TCP",
                                                 "destination": {"ports": [9000]}},
                                                {"action": "Deny", "protocol": "ICMP"}]})
        wait_for(lambda: connects(ext, NODE_IP, 9000, timeout=0.5), what="the normal policy opening 9000")
        assert not pings(ext, NODE_IP)

        # Untracked Allow both ways: the ping passes the normal policy's Deny, and conntrack never sees it.
        put_gnp(node, "icmp-untracked", {"doNotTrack": True, "applyOnForward": True, "order": 1,
                                         "ingress": [{"action": "Allow", "protocol": "ICMP"}],
                                         "egress": [{"action": "Allow", "protocol": "ICMP"}]})
        wait_for(lambda: pings(ext, NODE_IP), timeout=30, what="untracked ICMP")
        netns.run(node.ns, ["conntrack", "-F"], check=False)
        assert pings(ext, NODE_IP)
        entries = netns.run(node.ns, ["conntrack", "-L", "-p", "icmp"], check=False).stdout
        assert MEMBER_IP not in entries and "192.0.2" not in entries

        # An untracked Deny of everything TCP the host sends: replies are not spared by conntrack here, so
        # 9000's SYN-ACK dies in raw OUTPUT, but a failsafe service's reply (source port 22) still leaves.
        put_gnp(node, "tcp-out-untracked", {"doNotTrack": True, "applyOnForward": True, "order": 50,
                                            "egress": [{"action": "Deny", "protocol": "TCP"}]})
        wait_for(lambda: not connects(ext, NODE_IP, 9000, timeout=0.5), what="untracked egress Deny")
        assert connects(ext, NODE_IP, 22)

        node.ds.delete(node.keys.resource("hostendpoints", "n1-eth0"))
        wait_for(lambda: "l3n-hi-eth0" not in table(node.ns, "filter"), what="the host endpoint's chains removed")
        assert "l3n-" not in table(node.ns, "mangle")
        assert connects(ext, NODE_IP, 9000)


SERVICE_IP = "10.96.0.10"
HOST_OUT_DNAT = f"-A OUTPUT -d {SERVICE_IP}/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination {MEMBER_IP}:9000"


def test_host_traffic_dnat_to_a_service_is_policed_on_the_interface_it_leaves_by(node: Node,
                                                                                 edge: tuple[str, str]) -> None:
    """The host reaches a "Service" (its own DNAT in nat OUTPUT, as kube-proxy writes) backed by the external
    host behind eth0: default deny on eth0 blocks it, and an egress Allow for the address and port after DNAT
    opens it (Calico polices such traffic in mangle POSTROUTING, where the real interface is known)."""
    _, ext = edge
    netns.run(node.ns, ["iptables-nft", "-t", "nat", *HOST_OUT_DNAT.split()])
    with listening(ext, 9000):
        assert connects(node.ns, SERVICE_IP, 80)
        put_hep(node)
        wait_for(lambda: not connects(node.ns, SERVICE_IP, 80, timeout=0.5), what="the host's egress closed")
        assert not connects(node.ns, MEMBER_IP, 9000, timeout=0.5)  # the same, without DNAT (filter OUTPUT)
        assert "-g l3n-hmo-eth0" in table(node.ns, "mangle")
        put_gnp(node, "host-out-9000", {"types": ["Egress"], "egress": [
            {"action": "Allow", "protocol": "TCP", "destination": {"nets": [f"{MEMBER_IP}/32"], "ports": [9000]}}]})
        wait_for(lambda: connects(node.ns, SERVICE_IP, 80, timeout=0.5), what="egress Allow after DNAT")
        assert connects(node.ns, MEMBER_IP, 9000)
    assert HOST_OUT_DNAT in table(node.ns, "nat")
