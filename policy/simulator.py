"""policy.simulator: a small iptables + ipset interpreter for compiled policy programs.

It runs packets through a :class:`policy.compiler.PolicyProgram` the way the
kernel would (chains, jump vs goto, RETURN, marks, conntrack state, ipset
matches, the strict reverse-path check), so that hypothesis can compare the
compiled rules with :mod:`policy.evaluator`, and the benchmarks can count the
rules a packet visits. It understands exactly the rule syntax the compiler
emits and raises :class:`SimulatorError` on anything else, so a compiler
change cannot silently escape the check. Pure; no kernel.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from l3net.model import Resource
from l3net.model.workload_spec import workload_spec
from policy.compiler import PolicyProgram
from policy.evaluator import Packet
from policy.model import workload_ips

__all__ = ["Cluster", "SimNode", "SimPacket", "SimulatorError"]

UPLINK = "eth0"


class SimulatorError(ValueError):
    """A rule the simulator does not understand (a compiler/simulator mismatch)."""


@dataclass(frozen=True)
class SimPacket:
    src: str
    dst: str
    proto: str  # lower case: tcp, udp, sctp, icmp
    dport: int | None
    in_iface: str | None
    out_iface: str | None
    ctstate: str = "NEW"
    mark: int = 0
    sport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None


@dataclass
class _Rule:
    matches: list[tuple[bool, str, Any]] = field(default_factory=list)
    target: str = ""
    goto: bool = False
    xmark: tuple[int, int] | None = None


def _iface_match(pattern: str, iface: str | None) -> bool:
    if iface is None:
        return False
    return iface.startswith(pattern[:-1]) if pattern.endswith("+") else iface == pattern


def _parse_rule(body: str) -> _Rule:
    toks = shlex.split(body)
    rule = _Rule()
    i, neg = 0, False
    while i < len(toks):
        t = toks[i]
        if t == "!":
            neg, i = True, i + 1
            continue
        if t == "-m":
            mod = toks[i + 1]
            i += 2
            if mod == "rpfilter":
                invert = i < len(toks) and toks[i] == "--invert"
                i += 1 if invert else 0
                rule.matches.append((invert, "rpf", None))
            elif mod == "addrtype":
                if toks[i + 1:i + 2] != ["LOCAL"] or toks[i] not in ("--dst-type", "--src-type"):
                    raise SimulatorError(f"unsupported addrtype match in {body!r}")
                rule.matches.append((False, "local" if toks[i] == "--dst-type" else "srclocal", None))
                i += 2
            elif mod not in ("comment", "tcp", "udp", "sctp", "udplite", "set", "conntrack", "mark", "multiport",
                             "icmp"):
                raise SimulatorError(f"unknown match module {mod!r} in {body!r}")
            continue
        if t in ("--comment", "--log-prefix"):
            i += 2
            continue
        if t in ("-i", "-o", "-s", "-d", "-p", "--dport", "--sport", "--dports", "--sports", "--ctstate", "--mark",
                 "--icmp-type"):
            rule.matches.append((neg, t, toks[i + 1]))
            i, neg = i + 2, False
            continue
        if t == "--match-set":
            rule.matches.append((neg, t, (toks[i + 1], toks[i + 2])))
            i, neg = i + 3, False
            continue
        if t in ("-j", "-g"):
            rule.target, rule.goto = toks[i + 1], t == "-g"
            i += 2
            continue
        if t == "--notrack" and rule.target == "CT":
            i += 1
            continue
        if t == "--set-xmark":
            v, m = toks[i + 1].split("/")
            rule.xmark = (int(v, 16), int(m, 16))
            i += 2
            continue
        raise SimulatorError(f"unknown token {t!r} in {body!r}")
    if not rule.target:
        raise SimulatorError(f"rule without a target: {body!r}")
    return rule


class SimNode:
    """One node: its compiled program plus the routes that the reverse-path check needs."""

    def __init__(self, program: PolicyProgram, local_routes: Mapping[str, str],
                 local_addresses: Iterable[str] = ()):
        self.program = program
        self.local_routes = dict(local_routes)  # workload IP -> its interface; everything else via the uplink
        self.local_addresses = frozenset(local_addresses)  # the host's own addresses (addrtype LOCAL)
        self._rules: dict[str, dict[str, list[_Rule]]] = {
            table: {chain: [_parse_rule(r) for r in rules] for chain, rules in chains.items()}
            for table, chains in program.chains.items()}
        for table, hooks in program.hooks.items():
            for kchain, rules in hooks.items():
                self._rules.setdefault(table, {})[kchain] = [_parse_rule(r) for r in rules]
        self.visited = 0
        self._net_cache: dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}
        self._port_cache: dict[str, dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]]] = {}

    def _nets(self, name: str, members: frozenset[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        if name not in self._net_cache:
            self._net_cache[name] = [ipaddress.ip_network(m) for m in members]
        return self._net_cache[name]

    def _net_port_nets(self, name: str, members: frozenset[str],
                       proto_port: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The nets a ``hash:net,port`` set holds with this ``proto:port``."""
        by_port = self._port_cache.get(name)
        if by_port is None:
            by_port = {}
            for m in members:
                net, _, pp = m.partition(",")
                by_port.setdefault(pp, []).append(ipaddress.ip_network(net))
            self._port_cache[name] = by_port
        return by_port.get(proto_port, [])

    def _set_has(self, name: str, dirs: str, pkt: SimPacket) -> bool:
        if name not in self.program.ipsets:
            raise SimulatorError(f"rule references missing ipset {name}")
        kind, members = self.program.ipsets[name]
        if kind == "hash:net":
            ip = ipaddress.ip_address(pkt.src if dirs == "src" else pkt.dst)
            return any(ip in net for net in self._nets(name, members))
        if kind == "hash:net,port" and dirs in ("src,dst", "dst,dst"):
            # net,proto:port members; the net side per the first dir, the port is the destination port
            if pkt.dport is None:
                return False
            ip = ipaddress.ip_address(pkt.src if dirs == "src,dst" else pkt.dst)
            return any(ip in net for net in self._net_port_nets(name, members, f"{pkt.proto}:{pkt.dport}"))
        if kind == "hash:ip,port" and dirs == "dst,dst":
            return f"{pkt.dst},{pkt.proto}:{pkt.dport}" in members
        if kind == "hash:ip,port" and dirs == "src,src":
            return f"{pkt.src},{pkt.proto}:{pkt.sport}" in members
        raise SimulatorError(f"unsupported set use {kind} {dirs}")

    def _match(self, kind: str, arg: Any, pkt: SimPacket) -> bool:
        if kind == "-i":
            return _iface_match(arg, pkt.in_iface)
        if kind == "-o":
            return _iface_match(arg, pkt.out_iface)
        if kind in ("-s", "-d"):
            return ipaddress.ip_address(pkt.src if kind == "-s" else pkt.dst) in ipaddress.ip_network(arg)
        if kind == "-p":
            return pkt.proto == arg
        if kind in ("--dport", "--sport", "--dports", "--sports"):
            port = pkt.dport if kind.startswith("--d") else pkt.sport
            if port is None:
                return False
            for part in arg.split(","):
                lo, _, hi = part.partition(":")
                if int(lo) <= port <= int(hi or lo):
                    return True
            return False
        if kind == "--icmp-type":
            t, _, c = arg.partition("/")
            return pkt.icmp_type == int(t) and (not c or pkt.icmp_code == int(c))
        if kind == "--ctstate":
            return pkt.ctstate in arg.split(",")
        if kind == "--mark":
            v, m = (int(x, 16) for x in arg.split("/"))
            return pkt.mark & m == v
        if kind == "--match-set":
            return self._set_has(arg[0], arg[1], pkt)
        if kind == "rpf":
            return self.local_routes.get(pkt.src, UPLINK) == pkt.in_iface
        if kind in ("local", "srclocal"):
            return (pkt.dst if kind == "local" else pkt.src) in self.local_addresses
        raise SimulatorError(kind)

    def run_chain(self, table: str, chain: str, pkt: SimPacket, depth: int = 0) -> tuple[str, SimPacket]:
        """Verdict ACCEPT, DROP or RETURN (fell off / returned) and the packet with its mark."""
        if depth > 50:
            raise SimulatorError("chain loop")
        rules = self._rules.get(table, {}).get(chain)
        if rules is None:
            raise SimulatorError(f"jump to missing chain {table}/{chain}")
        for rule in rules:
            self.visited += 1
            if not all(self._match(kind, arg, pkt) != neg for neg, kind, arg in rule.matches):
                continue
            if rule.target in ("ACCEPT", "DROP"):
                return rule.target, pkt
            if rule.target == "RETURN":
                return "RETURN", pkt
            if rule.target == "LOG":
                continue
            if rule.target == "MARK":
                v, m = rule.xmark or (0, 0)
                pkt = replace(pkt, mark=(pkt.mark & ~m) | v)
                continue
            if rule.target == "CT":  # --notrack: conntrack never sees the packet
                pkt = replace(pkt, ctstate="UNTRACKED")
                continue
            verdict, pkt = self.run_chain(table, rule.target, pkt, depth + 1)
            if verdict != "RETURN" or rule.goto:
                return verdict, pkt
        return "RETURN", pkt

    def hook(self, table: str, kchain: str, pkt: SimPacket) -> bool:
        """Run a kernel chain whose policy is ACCEPT; True when the packet survives."""
        if kchain not in self._rules.get(table, {}):
            return True
        verdict, _ = self.run_chain(table, kchain, pkt)
        return verdict != "DROP"

    def forward(self, pkt: SimPacket) -> bool:
        return self.hook("raw", "PREROUTING", pkt) and self.hook("filter", "FORWARD", pkt)

    def traverse(self, pkt: SimPacket) -> bool:
        """The packet through every table in the kernel's order, carrying its mark and conntrack state:
        arriving (``in_iface``) to the host (no ``out_iface``) or forwarded; or sent by the host (no
        ``in_iface``). True when it survives."""
        if pkt.in_iface is not None:
            stages = [("raw", "PREROUTING"), ("mangle", "PREROUTING"),
                      ("filter", "INPUT" if pkt.out_iface is None else "FORWARD")]
        else:
            stages = [("raw", "OUTPUT"), ("filter", "OUTPUT")]
        if pkt.out_iface is not None:
            stages.append(("mangle", "POSTROUTING"))
        for table, kchain in stages:
            if kchain not in self._rules.get(table, {}):
                continue
            verdict, pkt = self.run_chain(table, kchain, pkt)
            if verdict == "DROP":
                return False
        return True


class Cluster:
    """Nodes joined by a routed fabric: a packet crosses the source's node and then the destination's."""

    def __init__(self, programs: Mapping[str, PolicyProgram], endpoints: Iterable[Resource]):
        self.where: dict[str, tuple[str, str]] = {}  # ip -> (node, iface)
        for wep in endpoints:
            spec = workload_spec(wep)
            for ip in workload_ips(wep):
                self.where[ip] = (spec.node, str(spec.interface_name))
        routes: dict[str, dict[str, str]] = {n: {} for n in programs}
        for ip, (node, iface) in self.where.items():
            routes.setdefault(node, {})[ip] = iface
        self.nodes = {n: SimNode(p, routes[n]) for n, p in programs.items()}

    def _path(self, src: str, dst: str) -> list[tuple[str, str, str]]:
        """(node, in_iface, out_iface) for every node the packet is forwarded by."""
        s, d = self.where.get(src), self.where.get(dst)
        if s and d and s[0] == d[0]:
            return [(s[0], s[1], d[1])]
        hops = []
        if s and s[0] in self.nodes:
            hops.append((s[0], s[1], UPLINK))
        if d and d[0] in self.nodes:
            hops.append((d[0], UPLINK, d[1]))
        return hops

    def send(self, packet: Packet, *, ctstate: str = "NEW") -> bool:
        proto = packet.protocol.lower()
        for node, in_if, out_if in self._path(packet.src, packet.dst):
            pkt = SimPacket(packet.src, packet.dst, proto, packet.dst_port, in_if, out_if, ctstate,
                            sport=packet.src_port, icmp_type=packet.icmp_type, icmp_code=packet.icmp_code)
            if not self.nodes[node].forward(pkt):
                return False
        return True

    def reply_allowed(self, original: Packet) -> bool:
        """Send the original; if it passed, the reply rides its conntrack entry (ESTABLISHED)."""
        if not self.send(original):
            return False
        reply = Packet(original.dst, original.src, original.protocol, original.src_port, original.dst_port)
        return self.send(reply, ctstate="ESTABLISHED")
