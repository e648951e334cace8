"""policy.rules: the iptables and ipset vocabulary every policy renderer shares (marks, rule fragments, names, hashes).

Owns the packet-mark bits and what they mean, the rule fragments built on them, the ``l3n:``
hash comments the driver diffs by, chain and ipset names that fit their kernel limits, the
``hash:net`` spelling of set members, and the multiport chunking of port lists.
:mod:`policy.compiler` and :mod:`policy.render` (workload chains), :mod:`policy.index` (set
members) and :mod:`policy.host_endpoints` (host endpoint chains) all use these, so a mark means
the same thing in every table and a set name the same set everywhere.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from l3net.constants import CHAIN_PREFIX, IPSET_PREFIX, RULE_HASH_COMMENT_PREFIX

_log = logging.getLogger(__name__)

__all__ = ["ACCEPT_MARK", "CLEAR_ACCEPT", "CLEAR_BOTH", "CLEAR_HOST_ACCEPTED", "CT_ACCEPT", "CT_INVALID",
           "FAILSAFE_PROTOCOLS",
           "HOST_ACCEPTED_MARK", "IF_ACCEPTED", "MAX_CHAIN_LEN", "MAX_IPSET_LEN", "PASS_MARK", "RETURN_IF_ACCEPTED",
           "RETURN_IF_HOST_ACCEPTED", "RETURN_IF_PASSED", "SET_ACCEPT", "SET_HOST_ACCEPTED", "SET_PASS",
           "UNLESS_PASSED", "chain_name", "digest", "failsafe_rules", "hash_rules", "ipset_name",
           "multiport_chunks", "set_nets"]

MAX_CHAIN_LEN = 28
MAX_IPSET_LEN = 31
# Mark bits chosen clear of kube-proxy's 0x4000/0x8000 and inside Felix's 0xffff0000 mask.
ACCEPT_MARK = 0x10000  # a policy chain allowed the packet (cleared before each tier)
PASS_MARK = 0x20000  # a policy passed the packet to the next tier
# An untracked (raw) or pre-DNAT (mangle) host endpoint policy allowed the packet: the host endpoint's
# later policy is skipped, as in Calico. Set before the filter table and never cleared by a tier.
HOST_ACCEPTED_MARK = 0x40000
FAILSAFE_PROTOCOLS = ("tcp", "udp", "sctp")

_A, _P, _H = f"0x{ACCEPT_MARK:x}", f"0x{PASS_MARK:x}", f"0x{HOST_ACCEPTED_MARK:x}"
CT_ACCEPT = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
CT_INVALID = "-m conntrack --ctstate INVALID -j DROP"
SET_ACCEPT = f"-j MARK --set-xmark {_A}/{_A}"
SET_PASS = f"-j MARK --set-xmark {_P}/{_P}"
SET_HOST_ACCEPTED = f"-j MARK --set-xmark {_H}/{_H}"
CLEAR_HOST_ACCEPTED = f"-j MARK --set-xmark 0x0/{_H}"
CLEAR_ACCEPT = f"-j MARK --set-xmark 0x0/{_A}"
CLEAR_BOTH = f"-j MARK --set-xmark 0x0/0x{ACCEPT_MARK | PASS_MARK:x}"
IF_ACCEPTED = f"-m mark --mark {_A}/{_A}"
RETURN_IF_ACCEPTED = f"{IF_ACCEPTED} -j RETURN"
RETURN_IF_PASSED = f"-m mark --mark {_P}/{_P} -j RETURN"
RETURN_IF_HOST_ACCEPTED = f"-m mark --mark {_H}/{_H} -j RETURN"
UNLESS_PASSED = f"-m mark --mark 0x0/{_P}"

_MULTIPORT_SLOTS = 15  # iptables' multiport limit; a range takes two slots
_COMMENT = f'-m comment --comment "{RULE_HASH_COMMENT_PREFIX}'


def digest(text: str, length: int) -> str:
    """``length`` URL-safe base64 characters of the SHA-224 of ``text``."""
    raw = hashlib.sha224(text.encode()).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")[:length]


def hash_rules(chain: str, bodies: Sequence[str]) -> list[str]:
    """Prefix every rule with its chained hash comment (a rule's hash covers it and all rules before it)."""
    prev = digest(chain, 16)
    out = []
    for body in bodies:
        # 12 digest bytes are exactly 16 base64 characters (Felix's hash length)
        prev = base64.urlsafe_b64encode(hashlib.sha224((prev + body).encode()).digest()[:12]).decode()
        out.append(f'{_COMMENT}{prev}" {body}')
    return out


def chain_name(kind: str, ident: str) -> str:
    """``l3n-<kind>-<ident>``, or a digest of ``ident`` when that would not fit iptables' limit."""
    name = f"{CHAIN_PREFIX}{kind}-{ident}"
    if len(name) <= MAX_CHAIN_LEN:
        return name
    base = f"{CHAIN_PREFIX}{kind}_"
    return base + digest(ident, MAX_CHAIN_LEN - len(base))


def ipset_name(tag: str, key: str) -> str:
    """``l3n<tag>:<digest of key>``: a set named by its meaning, so a rule never mentions a member."""
    base = f"{IPSET_PREFIX}{tag}:"
    return base + digest(f"{tag}:{key}", MAX_IPSET_LEN - len(base))


def _net(text: str) -> str:
    """A network in ipset's own spelling: a host network is written without ``/32``."""
    net = ipaddress.ip_network(str(text), strict=False)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def set_nets(nets: Iterable[Any]) -> frozenset[str]:
    """Members of a ``hash:net`` set: ``hash:net`` refuses a /0, so it becomes its two /1 halves (as Calico does)."""
    out: set[str] = set()
    for text in nets:
        out.update(_spelled(str(text)))
    return frozenset(out)


@functools.lru_cache(maxsize=1 << 16)
def _spelled(text: str) -> tuple[str, ...]:
    """One network's ``hash:net`` members, in ipset's spelling (cached: endpoint addresses recur in every
    recompile of a selector set they belong to; a bad address raises, and is not cached)."""
    net = ipaddress.ip_network(text, strict=False)
    if net.prefixlen == 0:
        return tuple(str(half) for half in net.subnets(prefixlen_diff=1))
    return (_net(text),)


def multiport_chunks(ports: list[str]) -> list[str]:
    """``ports`` (numbers or ``lo:hi``) as comma lists that each fit one multiport match."""
    chunks: list[list[str]] = [[]]
    used = 0
    for p in ports:
        cost = 2 if ":" in p else 1
        if used + cost > _MULTIPORT_SLOTS:
            chunks.append([])
            used = 0
        chunks[-1].append(p)
        used += cost
    return [",".join(c) for c in chunks if c]


def failsafe_rules(ports: Sequence[tuple[str, int]], target: str, match: str = "",
                   side: str = "dports") -> list[str]:
    """One multiport rule per protocol and chunk sending the failsafe ports to ``target``.

    ``ports`` are (protocol, port) pairs already parsed (``felix.config``); anything else is a
    programming error (ValueError), never rendered. ``match`` goes in front of each rule; ``side``
    is ``dports`` (the failsafe service) or ``sports`` (its replies).
    """
    by_proto: dict[str, list[str]] = {}
    for proto, port in ports:
        if proto not in FAILSAFE_PROTOCOLS or isinstance(port, bool) or not isinstance(port, int) \
                or not 1 <= port <= 65535:
            raise ValueError(f"failsafe port {proto!r}:{port!r} is not tcp, udp or sctp with a port 1..65535")
        by_proto.setdefault(proto, []).append(str(port))
    rules = []
    for proto in sorted(by_proto):
        chosen = sorted(set(by_proto[proto]), key=int)
        rules += [f"{match}-p {proto} -m multiport --{side} {chunk} -j {target}"
                  for chunk in multiport_chunks(chosen)]
    return rules
