"""NetworkPolicy on real traffic: two node namespaces, Calico-style pods, compiled rules applied by the real drivers.

One module-scoped topology (built here, not by the CNI or the agent):

    n1 (10.99.0.1) ==== eth0 veth ==== n2 (10.99.0.2)        static routes 10.244.N.0/24 via the other node
      cali* -> web1 prod, db1 prod, cli1 dev                   cali* -> web2 prod, cli2 dev, dns2 kube-system, late prod

Every pod runs TCP/UDP echo sockets created in-process inside its namespace
(one selector thread); probes also open their sockets in the source pod's
namespace, in parallel, with short timeouts. A denied probe is a timeout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import selectors
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from felix.drivers.ipsets import IpsetDriver
from felix.drivers.iptables import IptablesDriver, netns_runner
from l3net import netns
from l3net.model import Resource
from policy.compiler import compile_policy
from policy.evaluator import Packet, is_allowed
from tests.builders import cnp, gnp, netpol, ns, wep
from tests.netns_fixtures import NetnsFactory

pytestmark = pytest.mark.netns

TCP_PORTS = (80, 8080, 5000, 5002, 5003)
UDP_PORTS = (53, 5353)
# A probe expected to be denied waits this long for an answer that must not come (a reply takes
# milliseconds here when allowed). A probe expected to be allowed may wait much longer: it returns as soon
# as the echo comes back, so the patience costs nothing unless the machine is loaded, and a slow allowed
# probe is then not mistaken for a deny.
PROBE_TIMEOUT = 0.8
ALLOW_TIMEOUT = 5.0

PODS = {  # name: (k8s namespace, node, ip, labels, named ports)
    "web1": ("prod", "n1", "10.244.1.2", {"app": "web"}, []),
    "db1": ("prod", "n1", "10.244.1.3", {"app": "db"}, [{"name": "http-alt", "protocol": "TCP", "port": 8080}]),
    "cli1": ("dev", "n1", "10.244.1.4", {"app": "client"}, []),
    "web2": ("prod", "n2", "10.244.2.2", {"app": "web"}, []),
    "cli2": ("dev", "n2", "10.244.2.3", {"app": "client"}, []),
    "dns2": ("kube-system", "n2", "10.244.2.4", {"k8s-app": "kube-dns"},
             [{"name": "dns", "protocol": "UDP", "port": 53}]),
    "late": ("prod", "n2", "10.244.2.5", {"app": "db"}, []),
}
NAMESPACES = [ns("prod", {"env": "prod"}), ns("dev", {"env": "dev"}), ns("kube-system")]
IP = {name: spec[2] for name, spec in PODS.items()}


@dataclass
class Topo:
    factory: NetnsFactory
    node_ns: dict[str, str]
    pod_ns: dict[str, str]
    weps: dict[str, Resource]
    drivers: dict[str, tuple[IpsetDriver, IptablesDriver]]
    received: list[tuple[str, str, bytes]] = field(default_factory=list)  # (pod, src ip, payload) for UDP
    snapshot: dict[str, str] = field(default_factory=dict)

    def apply(self, policies: list[Resource], *, without: tuple[str, ...] = ("late",), rpf: bool = True,
              to_host: str = "Drop", failsafe: tuple[tuple[str, int], ...] = (),
              replace: dict[str, Resource] | None = None) -> int:
        """Compile and program both nodes; ``replace``: pod name -> the WorkloadEndpoint to use instead."""
        known = [(replace or {}).get(name, w) for name, w in self.weps.items() if name not in without]
        writes = 0
        for node, (ips, ipt) in self.drivers.items():
            local = [w for w in known if w.spec["node"] == node]
            prog = compile_policy(local, known, policies, NAMESPACES, reverse_path_filter=rpf,
                                  endpoint_to_host_action=to_host, failsafe_ports=failsafe)
            writes += ips.apply_adds(prog.ipsets) + ipt.apply(prog.chains, prog.hooks) + ips.apply_deletes(prog.ipsets)
        return writes


def _sh(ns_name: str, *cmd: str) -> None:
    netns.run(ns_name, list(cmd))


def _serve(topo: Topo, stop: threading.Event) -> None:
    sel = selectors.DefaultSelector()
    for pod, pns in topo.pod_ns.items():
        with netns.in_netns(pns):
            for port in TCP_PORTS:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", port))
                s.listen(64)
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ, ("tcp", pod))
            for port in UDP_PORTS:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                u.bind(("0.0.0.0", port))
                u.setblocking(False)
                sel.register(u, selectors.EVENT_READ, ("udp", pod))
    try:
        while not stop.is_set():
            for key, _ in sel.select(0.2):
                kind, pod = key.data
                sock = key.fileobj
                if kind == "tcp":
                    with contextlib.suppress(OSError):
                        conn, _ = sock.accept()
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ, ("conn", pod))
                elif kind == "conn":
                    with contextlib.suppress(OSError):
                        data = sock.recv(1024)
                        if data:
                            sock.sendall(data)
                    sel.unregister(sock)
                    sock.close()
                else:
                    with contextlib.suppress(OSError):
                        data, addr = sock.recvfrom(2048)
                        topo.received.append((pod, addr[0], data))
                        sock.sendto(data, addr)
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()


def _build(f: NetnsFactory) -> Topo:
    node_ns = {n: f(n) for n in ("n1", "n2")}
    f.veth(node_ns["n1"], "eth0", node_ns["n2"], "eth0")
    for i, n in enumerate(("n1", "n2"), start=1):
        other = 3 - i
        _sh(node_ns[n], "ip", "addr", "add", f"10.99.0.{i}/24", "dev", "eth0")
        _sh(node_ns[n], "ip", "route", "add", f"10.244.{other}.0/24", "via", f"10.99.0.{other}")
        _sh(node_ns[n], "ip", "route", "add", "default", "via", f"10.99.0.{other}")
        netns.write_sysctl("net.ipv4.ip_forward", 1, node_ns[n])
    pod_ns, weps = {}, {}
    for idx, (pod, (kns, node, ip, labels, ports)) in enumerate(PODS.items()):
        w = wep(pod, kns, node, ip, labels, ports)
        weps[pod] = w
        pns = pod_ns[pod] = f(f"p{idx}")
        iface = w.spec["interfaceName"]
        f.veth(node_ns[node], iface, pns, "eth0")
        _sh(pns, "ip", "addr", "add", f"{ip}/32", "dev", "eth0")
        _sh(pns, "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        _sh(pns, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        netns.write_sysctl(f"net/ipv4/conf/{iface}/proxy_arp", 1, node_ns[node])
        netns.write_sysctl(f"net/ipv4/neigh/{iface}/proxy_delay", 0, node_ns[node])
        _sh(node_ns[node], "ip", "route", "add", f"{ip}/32", "dev", iface, "scope", "link")
    drivers = {n: (IpsetDriver(netns_runner(s)), IptablesDriver(netns_runner(s), backend="auto"))
               for n, s in node_ns.items()}
    return Topo(f, node_ns, pod_ns, weps, drivers)


def _plant_foreign(topo: Topo) -> None:
    """Rules, a chain and a set that are not ours, in each node: they must come out byte-for-byte unchanged."""
    for s in topo.node_ns.values():
        script = ("*filter\n:FOREIGN-CHAIN - [0:0]\n-A FOREIGN-CHAIN -s 203.0.113.0/24 -j DROP\n"
                  "-A FORWARD -s 198.51.100.0/24 -j FOREIGN-CHAIN\n-A INPUT -p tcp --dport 2222 -j ACCEPT\nCOMMIT\n"
                  "*raw\n-A PREROUTING -s 192.0.2.0/24 -j DROP\nCOMMIT\n")
        netns.run(s, ["iptables-nft-restore", "--noflush"], input=script)
        _sh(s, "ipset", "create", "foreign-set", "hash:ip")
        _sh(s, "ipset", "add", "foreign-set", "192.0.2.7")
        topo.snapshot[s] = _host_state(s)


def _host_state(s: str) -> str:
    save = netns.run(s, ["iptables-nft-save"]).stdout
    sets = netns.run(s, ["ipset", "save"]).stdout
    return "\n".join(line for line in (save + sets).splitlines() if not line.startswith("#"))


@pytest.fixture(scope="module")
def topo() -> Iterator[Topo]:
    f = NetnsFactory()
    stop = threading.Event()
    thread = None
    t = None
    try:
        t = _build(f)
        _plant_foreign(t)
        thread = threading.Thread(target=_serve, args=(t, stop), daemon=True)
        thread.start()
        yield t
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=5)
        for ips, ipt in (t.drivers.values() if t is not None else ()):
            ipt.close()   # the long-lived restore processes, before their namespaces go
            ips.close()
        f.cleanup()


def _probe(topo: Topo, src: str, dst_ip: str, proto: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    token = uuid.uuid4().hex.encode()
    with netns.in_netns(topo.pod_ns[src]):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "TCP" else socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        if proto == "TCP":
            s.connect((dst_ip, port))
            s.sendall(token)
        else:
            s.sendto(token, (dst_ip, port))
        return s.recv(1024) == token
    except OSError:
        return False
    finally:
        s.close()


Case = tuple[str, str, str, int, bool]  # (src pod, dst pod, protocol, port, expected)


def check(topo: Topo, policies: list[Resource], cases: list[Case], *, known: tuple[str, ...] | None = None,
          replace: dict[str, Resource] | None = None) -> None:
    """Probe every case in parallel; the expectation must also be what the reference evaluator says.

    ``replace``: pod name -> the WorkloadEndpoint the last ``apply`` used instead (the oracle sees it too).
    """
    weps = [(replace or {}).get(n, w) for n, w in topo.weps.items() if known is None or n in known]
    for src, dst, proto, port, expected in cases:
        oracle = is_allowed(policies, NAMESPACES, weps, Packet(IP[src], IP[dst], proto, port))
        assert oracle is expected, f"test expectation disagrees with the evaluator: {src}->{dst} {proto}/{port}"
    with ThreadPoolExecutor(max_workers=16) as pool:
        got = list(pool.map(lambda c: _probe(topo, c[0], IP[c[1]], c[2], c[3],
                                             ALLOW_TIMEOUT if c[4] else PROBE_TIMEOUT), cases))
    wrong = [f"{c[0]}->{c[1]} {c[2]}/{c[3]}: expected {'allow' if c[4] else 'deny'}"
             for c, g in zip(cases, got, strict=True) if g != c[4]]
    assert not wrong, wrong


DENY_PROD_INGRESS = netpol("deny-in", "prod", {"podSelector": {}, "policyTypes": ["Ingress"]})


def test_no_policy_allows_everything_same_and_cross_node(topo: Topo) -> None:
    topo.apply([])
    check(topo, [], [("cli1", "web1", "TCP", 80, True), ("cli1", "web2", "TCP", 80, True),
                     ("web2", "db1", "UDP", 5353, True), ("dns2", "cli2", "TCP", 8080, True)])


def test_default_deny_ingress_and_replies(topo: Topo) -> None:
    pols = [DENY_PROD_INGRESS]
    topo.apply(pols)
    check(topo, pols, [("cli1", "web1", "TCP", 80, False), ("web1", "db1", "TCP", 80, False),
                       ("cli2", "web1", "UDP", 53, False), ("cli1", "web2", "TCP", 80, False),
                       # prod pods may still connect out, and the replies come back in
                       ("web1", "cli1", "TCP", 80, True), ("web2", "cli1", "UDP", 5353, True),
                       ("cli2", "cli1", "TCP", 80, True)])


def test_default_deny_egress_in_other_namespace_only(topo: Topo) -> None:
    pols = [netpol("deny-out", "dev", {"podSelector": {}, "policyTypes": ["Egress"]})]
    topo.apply(pols)
    check(topo, pols, [("cli1", "web1", "TCP", 80, False), ("cli1", "cli2", "TCP", 80, False),
                       ("cli2", "dns2", "UDP", 53, False), ("web2", "cli1", "TCP", 80, True),
                       ("web1", "db1", "TCP", 80, True), ("web2", "web1", "UDP", 5353, True)])


def test_allow_all_over_deny_all(topo: Topo) -> None:
    pols = [DENY_PROD_INGRESS, netpol("allow-all", "prod", {"podSelector": {}, "ingress": [{}]})]
    topo.apply(pols)
    check(topo, pols, [("cli1", "web1", "TCP", 80, True), ("cli2", "db1", "UDP", 5353, True),
                       ("dns2", "web2", "TCP", 5003, True)])


def test_pod_and_namespace_selector_and(topo: Topo) -> None:
    peer = {"podSelector": {"matchLabels": {"app": "client"}}, "namespaceSelector": {"matchLabels": {"env": "dev"}}}
    pols = [netpol("db", "prod", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [peer]}]})]
    topo.apply(pols)
    check(topo, pols, [("cli1", "db1", "TCP", 80, True), ("cli2", "db1", "TCP", 80, True),
                       ("web1", "db1", "TCP", 80, False), ("dns2", "db1", "TCP", 80, False),
                       ("dns2", "web1", "TCP", 80, True)])


def test_pod_or_namespace_selector(topo: Topo) -> None:
    peers = [{"podSelector": {"matchLabels": {"app": "web"}}},
             {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}]}}]
    pols = [netpol("db", "prod", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": peers}]})]
    topo.apply(pols)
    check(topo, pols, [("web1", "db1", "TCP", 80, True), ("web2", "db1", "UDP", 5353, True),
                       ("cli2", "db1", "TCP", 8080, True), ("dns2", "db1", "TCP", 80, False)])


def test_ip_block_with_except(topo: Topo) -> None:
    pols = [netpol("out", "dev", {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
                                  "egress": [{"to": [{"ipBlock": {"cidr": "10.244.1.0/24",
                                                                  "except": ["10.244.1.3/32"]}}]}]})]
    topo.apply(pols)
    check(topo, pols, [("cli2", "web1", "TCP", 80, True), ("cli2", "db1", "TCP", 80, False),
                       ("cli2", "web2", "TCP", 80, False), ("cli1", "web1", "UDP", 53, True),
                       ("cli1", "db1", "UDP", 53, False)])


def test_named_port_resolved_on_destination(topo: Topo) -> None:
    pols = [netpol("db", "prod", {"podSelector": {"matchLabels": {"app": "db"}},
                                  "ingress": [{"ports": [{"port": "http-alt"}]}]}),
            netpol("dns-only", "dev", {"podSelector": {}, "policyTypes": ["Egress"],
                                       "egress": [{"ports": [{"protocol": "UDP", "port": "dns"}]}]})]
    topo.apply(pols)
    check(topo, pols, [("web1", "db1", "TCP", 8080, True), ("web2", "db1", "TCP", 80, False),
                       ("web1", "db1", "UDP", 5353, False),
                       ("cli1", "dns2", "UDP", 53, True), ("cli1", "web2", "UDP", 53, False)])


def test_end_port_range(topo: Topo) -> None:
    pols = [netpol("web", "prod", {"podSelector": {"matchLabels": {"app": "web"}},
                                   "ingress": [{"ports": [{"protocol": "TCP", "port": 5000, "endPort": 5002}]}]})]
    topo.apply(pols)
    check(topo, pols, [("cli1", "web2", "TCP", 5000, True), ("cli1", "web2", "TCP", 5002, True),
                       ("cli1", "web2", "TCP", 5003, False), ("cli2", "web1", "TCP", 80, False)])


def test_multiple_policies_are_a_union(topo: Topo) -> None:
    pols = [netpol("a", "prod", {"podSelector": {"matchLabels": {"app": "web"}},
                                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"env": "dev"}}}],
                                              "ports": [{"port": 80}]}]}),
            netpol("b", "prod", {"podSelector": {"matchLabels": {"app": "web"}},
                                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                                     "kubernetes.io/metadata.name": "kube-system"}}}],
                                              "ports": [{"port": 5000}]}]})]
    topo.apply(pols)
    check(topo, pols, [("cli1", "web1", "TCP", 80, True), ("cli1", "web1", "TCP", 5000, False),
                       ("dns2", "web1", "TCP", 5000, True), ("dns2", "web2", "TCP", 80, False)])


def test_egress_to_dns_only(topo: Topo) -> None:
    pols = [netpol("dns", "dev", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
        "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]})]
    topo.apply(pols)
    check(topo, pols, [("cli1", "dns2", "UDP", 53, True), ("cli2", "dns2", "UDP", 53, True),
                       ("cli1", "dns2", "UDP", 5353, False), ("cli1", "web1", "UDP", 53, False),
                       ("cli2", "web2", "TCP", 80, False), ("web1", "dns2", "UDP", 5353, True)])


def _sctp_socket(pod_ns: str) -> socket.socket:
    with netns.in_netns(pod_ns):
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)


def _sctp_connects(topo: Topo, src: str, dst: str, port: int, timeout: float) -> bool:
    """An SCTP association from pod src to pod dst:port; a policy drop is a timeout."""
    listener = _sctp_socket(topo.pod_ns[dst])
    client = _sctp_socket(topo.pod_ns[src])
    try:
        listener.bind(("0.0.0.0", port))
        listener.listen(1)
        client.settimeout(timeout)
        try:
            client.connect((IP[dst], port))
        except OSError:
            return False
        return True
    finally:
        client.close()
        listener.close()


def test_sctp(topo: Topo) -> None:
    try:
        _sctp_socket(topo.pod_ns["web1"]).close()
    except OSError as exc:
        # Only the kernel saying it has no SCTP at all (built without CONFIG_IP_SCTP, or the module not
        # loadable) is a skip; any other error (the namespace, a limit, a permission) is a failure.
        if exc.errno not in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT):
            raise
        pytest.skip(f"kernel has no SCTP sockets: socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP) failed with "
                    f"{errno.errorcode[exc.errno]}")
    pols = [netpol("sctp", "prod", {"podSelector": {"matchLabels": {"app": "web"}},
                                    "ingress": [{"ports": [{"protocol": "SCTP", "port": 9000}]}]})]
    topo.apply(pols)
    for src, dst, port, expected in (("cli1", "web2", 9000, True), ("cli2", "web1", 9000, True),
                                     ("cli1", "web2", 9001, False)):
        oracle = is_allowed(pols, NAMESPACES, topo.weps.values(), Packet(IP[src], IP[dst], "SCTP", port))
        assert oracle == expected, (src, dst, port)
        got = _sctp_connects(topo, src, dst, port, ALLOW_TIMEOUT if expected else PROBE_TIMEOUT)
        assert got == expected, (src, dst, port, got)


def test_policy_applied_before_pod_exists(topo: Topo) -> None:
    pols = [netpol("db", "prod", {"podSelector": {"matchLabels": {"app": "db"}},
                                  "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]})]
    topo.apply(pols)  # "late" is not known yet: its interface is dropped both ways (fail closed)
    with ThreadPoolExecutor(4) as pool:
        early = list(pool.map(lambda c: _probe(topo, c[0], IP[c[1]], "TCP", 80),
                              [("web2", "late"), ("late", "web2")]))
    assert early == [False, False]
    topo.apply(pols, without=())
    check(topo, pols, [("web2", "late", "TCP", 80, True), ("web1", "late", "TCP", 8080, True),
                       ("cli2", "late", "TCP", 80, False), ("late", "cli2", "TCP", 80, True)], known=tuple(PODS))


def _send_raw_udp(topo: Topo, pod: str, src_ip: str, dst_ip: str, port: int, payload: bytes) -> None:
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                      socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    with netns.in_netns(topo.pod_ns[pod]):
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with s:
        s.sendto(hdr + udp, (dst_ip, 0))


@pytest.mark.parametrize("rpf", [True, False], ids=["raw-rpfilter", "from-workload-source-match"])
def test_spoofed_source_is_dropped(topo: Topo, rpf: bool) -> None:
    pols = [netpol("db", "prod", {"podSelector": {"matchLabels": {"app": "db"}},
                                  "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]})]
    topo.apply(pols, rpf=rpf)
    honest, honest2, forged = (uuid.uuid4().hex.encode() for _ in range(3))
    _send_raw_udp(topo, "cli1", IP["web1"], IP["db1"], 5353, forged)  # cli1 borrows web1's allowed address
    _send_raw_udp(topo, "cli2", IP["web1"], IP["db1"], 5353, forged)  # and from the other node
    # Controls, sent after the forgeries on the same raw paths with their own addresses, one per node: once
    # both have arrived, a forged datagram that got through would have arrived too. Wait for them, not for
    # a fixed time.
    _send_raw_udp(topo, "web1", IP["web1"], IP["db1"], 5353, honest)
    _send_raw_udp(topo, "web2", IP["web2"], IP["db1"], 5353, honest2)

    def arrived(payload: bytes) -> bool:
        return any(pod == "db1" and p == payload for pod, _, p in list(topo.received))
    deadline = time.monotonic() + 15
    while not (arrived(honest) and arrived(honest2)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert arrived(honest), "the same-node control datagram never reached db1"
    assert arrived(honest2), "the cross-node control datagram never reached db1"
    assert not any(p == forged for _, _, p in list(topo.received))


def test_gnp_deny_overrides_np_allow_and_pass_reaches_it(topo: Topo) -> None:
    pols = [netpol("allow-all", "prod", {"podSelector": {}, "ingress": [{}]}),
            gnp("no-dev-to-web", {"order": 10, "selector": "app == 'web'", "ingress": [
                {"action": "Deny", "source": {"namespaceSelector": "env == 'dev'"}}, {"action": "Pass"}]})]
    topo.apply(pols)
    check(topo, pols, [("cli1", "web1", "TCP", 80, False), ("cli2", "web2", "TCP", 80, False),
                       ("cli1", "web2", "UDP", 53, False),
                       ("db1", "web1", "TCP", 80, True), ("dns2", "web2", "UDP", 5353, True),  # passed to the NP
                       ("cli1", "db1", "TCP", 80, True)])  # db is not selected by the GNP


def test_gnp_pass_only_some_traffic_to_the_np_tier(topo: Topo) -> None:
    pols = [netpol("from-web", "prod", {"podSelector": {}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
            gnp("prod-gate", {"order": 5, "selector": "projectcalico.org/namespace == 'prod'", "types": ["Ingress"],
                              "ingress": [{"action": "Pass", "protocol": "TCP", "destination": {"ports": [80]}}]})]
    topo.apply(pols)
    check(topo, pols, [("web2", "web1", "TCP", 80, True),     # passed, then allowed by the NP
                       ("cli1", "web1", "TCP", 80, False),    # passed, the NP does not allow clients
                       ("web2", "db1", "TCP", 8080, False),   # not passed: end of the GNP tier drops it
                       ("web1", "web2", "UDP", 53, False),
                       ("web1", "cli2", "TCP", 8080, True)])  # dev is not selected by either


def test_gnp_egress_allow_by_selector_across_namespaces(topo: Topo) -> None:
    pols = [gnp("dev-egress", {"order": 1, "namespaceSelector": "env == 'dev'", "types": ["Egress"], "egress": [
        {"action": "Log", "protocol": "UDP"},
        {"action": "Allow", "protocol": "UDP", "destination": {"selector": "k8s-app == 'kube-dns'", "ports": [53]}},
        {"action": "Allow", "protocol": "TCP", "destination": {"selector": "app == 'web'",
                                                               "notNets": ["10.244.2.0/24"]}}]})]
    topo.apply(pols)
    check(topo, pols, [("cli1", "dns2", "UDP", 53, True), ("cli2", "dns2", "UDP", 53, True),
                       ("cli1", "dns2", "UDP", 5353, False), ("cli1", "web1", "TCP", 80, True),
                       ("cli1", "web2", "TCP", 80, False),  # notNets excludes node 2's pods
                       ("cli2", "db1", "TCP", 80, False), ("web1", "cli1", "TCP", 80, True)])


def _with_account(w: Resource, account: str, labels: dict[str, str]) -> Resource:
    """The endpoint as the kube-controller writes it for a pod of ServiceAccount ``account`` with ``labels``."""
    return dataclasses.replace(w, spec={**w.spec, "serviceAccountName": account},
                               labels={**w.labels, **{f"pcsa.{k}": v for k, v in labels.items()}})


def test_calico_network_policy_denies_in_its_namespace_only(topo: Topo) -> None:
    # cli2 (dev, n2) gets web's labels: the twin of web1/web2 in another namespace.
    twin = {"cli2": wep("cli2", "dev", "n2", IP["cli2"], {"app": "web"})}
    pols = [cnp("deny-web", "prod", {"selector": "app == 'web'", "ingress": [{"action": "Deny"}]})]
    topo.apply(pols, replace=twin)
    check(topo, pols, [("cli1", "web1", "TCP", 80, False), ("cli1", "web2", "TCP", 80, False),
                       ("db1", "web1", "UDP", 5353, False),
                       ("cli1", "cli2", "TCP", 80, True), ("web1", "cli2", "UDP", 5353, True),  # the twin in dev
                       ("cli1", "db1", "TCP", 80, True)],  # prod, not selected
          replace=twin)


def test_calico_service_accounts_select_pods_by_their_account(topo: Topo) -> None:
    # web1 and web2 carry the same labels; only web1 runs as the api ServiceAccount.
    accounts = {"web1": _with_account(topo.weps["web1"], "api", {"tier": "front"}),
                "web2": _with_account(topo.weps["web2"], "default", {})}
    pols = [cnp("db-from-api", "prod", {"selector": "app == 'db'", "ingress": [
                {"action": "Allow", "source": {"serviceAccounts": {"names": ["api"]}}}]}),
            cnp("api-no-udp", "prod", {"order": 10, "serviceAccountSelector": "tier == 'front'", "types": ["Egress"],
                                       "egress": [{"action": "Deny", "protocol": "UDP"}, {"action": "Allow"}]})]
    topo.apply(pols, replace=accounts)
    check(topo, pols, [("web1", "db1", "TCP", 80, True), ("web1", "db1", "TCP", 8080, True),
                       ("web2", "db1", "TCP", 80, False),    # same labels, another account
                       ("cli1", "db1", "TCP", 80, False),
                       ("web1", "cli1", "UDP", 5353, False),  # the api account's pods send no UDP
                       ("web2", "cli1", "UDP", 5353, True), ("web1", "cli2", "TCP", 80, True)],
          replace=accounts)


@contextlib.contextmanager
def _node_listeners(topo: Topo, node: str, ports: tuple[int, ...]) -> Iterator[None]:
    """TCP echo listeners in a node's own namespace (the node's services a pod must not reach)."""
    socks = []
    for port in ports:
        with netns.in_netns(topo.node_ns[node]):
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", port))
        srv.listen(16)
        srv.settimeout(0.2)
        socks.append(srv)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            for srv in socks:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    continue
                with conn:
                    conn.settimeout(2)
                    with contextlib.suppress(OSError):
                        conn.sendall(conn.recv(1024))
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        for srv in socks:
            srv.close()


def _host_probe(topo: Topo, src: str, dst_ip: str, port: int, expected: bool) -> bool:
    return _probe(topo, src, dst_ip, "TCP", port, ALLOW_TIMEOUT if expected else PROBE_TIMEOUT)


def _node_to_pod(topo: Topo, node: str, dst_ip: str, port: int) -> bool:
    """A connection the node opens to a pod (kubelet probes): its replies come back through INPUT."""
    token = uuid.uuid4().hex.encode()
    with netns.in_netns(topo.node_ns[node]):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(ALLOW_TIMEOUT)
    try:
        s.connect((dst_ip, port))
        s.sendall(token)
        return s.recv(1024) == token
    except OSError:
        return False
    finally:
        s.close()


def test_workload_to_host_follows_the_default_endpoint_to_host_action(topo: Topo) -> None:
    # n1's addresses: 10.99.0.1 on eth0 (its uplink). 7070 is any node service, 7022 a failsafe port here.
    with _node_listeners(topo, "n1", (7070, 7022)):
        topo.apply([])  # Drop, Calico's default
        cases = [("web1", "10.99.0.1", 7070, False), ("web1", "10.99.0.1", 7022, False),
                 ("cli2", "10.99.0.1", 7070, True)]  # a pod of the other node reaches n1 (forwarded, not INPUT)
        with ThreadPoolExecutor(max_workers=8) as pool:
            got = list(pool.map(lambda c: _host_probe(topo, c[0], c[1], c[2], c[3]), cases))
        assert got == [c[3] for c in cases], list(zip(cases, got, strict=True))
        # Other pods stay reachable, and so do pods from their node (replies to the node pass INPUT).
        check(topo, [], [("web1", "db1", "TCP", 80, True), ("web1", "web2", "TCP", 80, True)])
        assert _node_to_pod(topo, "n1", IP["web1"], 80)

        topo.apply([], failsafe=(("tcp", 7022),))
        assert _host_probe(topo, "web1", "10.99.0.1", 7022, True)
        assert not _host_probe(topo, "web1", "10.99.0.1", 7070, False)
        # The workload's egress policy still comes first: a pod denied egress gets no failsafe either.
        deny_out = [netpol("deny-out", "prod", {"podSelector": {}, "policyTypes": ["Egress"]})]
        topo.apply(deny_out, failsafe=(("tcp", 7022),))
        assert not _host_probe(topo, "web1", "10.99.0.1", 7022, False)

        topo.apply([], to_host="Return")  # back to the host's own INPUT rules (policy ACCEPT here)
        assert _host_probe(topo, "web1", "10.99.0.1", 7070, True)
        topo.apply([], to_host="Accept")
        assert _host_probe(topo, "web1", "10.99.0.1", 7070, True)
    topo.apply([])


def test_pod_in_evil_namespace_cannot_join_prods_selectors_by_labels(topo: Topo) -> None:
    # cli1 lives in "dev"; its stored endpoint claims prod's implicit and namespace labels.
    spoofed = wep("cli1", "dev", "n1", IP["cli1"], {"app": "web", "projectcalico.org/namespace": "prod",
                                                    "pcns.env": "prod",
                                                    "pcns.kubernetes.io/metadata.name": "prod"})
    pols = [netpol("db-from-prod", "prod", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [
        {"from": [{"podSelector": {}}]},  # same namespace (prod) only
        {"from": [{"namespaceSelector": {"matchLabels": {"env": "prod"}}}]}]}),
        gnp("web-from-prod", {"selector": "app == 'web'", "ingress": [
            {"action": "Allow", "source": {"namespaceSelector": "env == 'prod'"}}]})]
    topo.apply(pols, replace={"cli1": spoofed})
    weps = [spoofed if n == "cli1" else w for n, w in topo.weps.items() if n != "late"]
    cases: list[Case] = [("cli1", "db1", "TCP", 80, False), ("web1", "db1", "TCP", 80, True),
                         ("cli1", "web2", "TCP", 80, False), ("web1", "web2", "TCP", 80, True),
                         # cli1's own app=web label stays, so the GNP protects it too: prod may reach it,
                         # dev may not (its spoofed labels made it no prod pod, as a source or destination)
                         ("web2", "cli1", "TCP", 80, True), ("cli2", "cli1", "TCP", 80, False)]
    for src, dst, proto, port, expected in cases:
        assert is_allowed(pols, NAMESPACES, weps, Packet(IP[src], IP[dst], proto, port)) is expected
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda c: _probe(topo, c[0], IP[c[1]], c[2], c[3],
                                             ALLOW_TIMEOUT if c[4] else PROBE_TIMEOUT), cases))
    assert got == [c[4] for c in cases], list(zip(cases, got, strict=True))


def test_zz_zero_writes_and_host_rules_untouched(topo: Topo) -> None:
    pols = [DENY_PROD_INGRESS, netpol("x", "dev", {"podSelector": {}, "egress": [{"to": [
        {"podSelector": {"matchLabels": {"app": "client"}}}]}]})]
    topo.apply(pols)
    calls = {n: (ips.restore_calls, ipt.restore_calls) for n, (ips, ipt) in topo.drivers.items()}
    assert topo.apply(pols) == 0
    assert calls == {n: (ips.restore_calls, ipt.restore_calls) for n, (ips, ipt) in topo.drivers.items()}
    for node, s in topo.node_ns.items():
        assert topo.drivers[node][1].backend == "nft"
        save = netns.run(s, ["iptables-nft-save", "-t", "filter"]).stdout
        forward = [ln for ln in save.splitlines() if ln.startswith("-A FORWARD ")]
        assert "l3n-FORWARD" in forward[0] and "FOREIGN-CHAIN" in forward[1]  # our one hook sits on top
        during = [ln for ln in _host_state(s).splitlines() if "l3n" not in ln]
        assert during == [ln for ln in topo.snapshot[s].splitlines() if "l3n" not in ln]
    for ips, ipt in topo.drivers.values():
        ipt.remove_all()
        ips.apply_deletes({})
    for s in topo.node_ns.values():
        assert _host_state(s) == topo.snapshot[s]
