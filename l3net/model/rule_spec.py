"""l3net.model.rule_spec: the typed rules of the policy kinds, what a rule matches and what it does.

The model validates a policy's rules once (:mod:`l3net.model.validate.k8s_policy`,
:mod:`l3net.model.validate.calico_policy`, with the ports and protocols of
:mod:`l3net.model.validate.ports`); :mod:`l3net.model.policy_spec` turns each validated rule into one of
the frozen values here, in the same once-per-Resource conversion, so the policy compiler reads fields
and parses nothing. Nothing here checks: a rule reaches this module only as the model validated it, and
each field is converted, never re-judged.

A Kubernetes NetworkPolicy rule (:class:`KubernetesRule`) has peers and ports. A peer is a pod selector
and/or a namespace selector (the validated label-selector mappings, compiled where they are used), or an
``ipBlock`` (:class:`IPBlock`: its ``cidr`` and ``except`` entries as ``ip_network`` objects, the excepts
strictly inside the cidr and of its family). A port (:class:`KubernetesPort`) has its protocol upper-case
with the API server's default, TCP; ``port`` a number, a named port (text) or None (every port of the
protocol); ``end_port`` only after a number, never below it.

A Calico rule (:class:`CalicoRule`) has its ``action``; ``protocol``/``not_protocol`` as one lowercase
spelling for a name and its number alike (``tcp``, ``udp``, ``sctp``, ``udplite``, ``icmp``, ``icmpv6``,
else the number as text: ``"47"``), so ``6`` and ``TCP`` read the same; ``icmp`` (:class:`IcmpMatch`: a
type and an optional code), None when no type is given; and its two sides (:class:`CalicoEntityRule`):
``nets``/``not_nets`` as ``ip_network`` objects (IPv4 and IPv6, as written), selectors as the validated
text, ``service_accounts`` (:class:`ServiceAccountMatch`, None when it names nothing), and
``ports``/``not_ports`` each a :class:`PortRange` (a number is a range of one) or a named port (text).
The model accepts no other rule field (``ipVersion``, ``notICMP``, ``http`` and ``metadata`` are refused
as unknown; a side's ``services`` only empty), so there is none here.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ICMPV6", "CalicoEntityRule", "CalicoPort", "CalicoRule", "IPBlock", "IPNetwork", "IcmpMatch",
           "KubernetesPeer", "KubernetesPort", "KubernetesRule", "PortRange", "ServiceAccountMatch", "calico_rule",
           "kubernetes_rule"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The protocol numbers with a name, as the rule's protocol is spelled whichever way it was written.
_PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite"}
ICMPV6 = "icmpv6"  # a rule protocol no IPv4 packet carries


@functools.lru_cache(maxsize=1 << 12)
def _network(text: str) -> IPNetwork:
    """A validated CIDR as an ``ip_network`` (cached: the same CIDRs recur across policies and their versions;
    the values are immutable, so sharing them is safe)."""
    return ipaddress.ip_network(text)


def _networks(texts: Any) -> tuple[IPNetwork, ...]:
    return tuple(map(_network, texts)) if texts else ()


# -- Kubernetes NetworkPolicy -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class IPBlock:
    """A peer's ``ipBlock``: ``cidr`` except the ``excepts`` (each strictly inside it, of its family)."""

    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class KubernetesPeer:
    """One ``from``/``to`` entry: selectors (label-selector mappings; None when absent), or an ipBlock alone."""

    pod_selector: Mapping[str, Any] | None = None
    namespace_selector: Mapping[str, Any] | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True, slots=True)
class KubernetesPort:
    """One ``ports`` entry: a protocol, and a number (up to ``end_port``), a named port, or None (every port)."""

    protocol: str = "TCP"               # TCP, UDP or SCTP
    port: int | str | None = None
    end_port: int | None = None         # with a numeric port only, >= port


@dataclass(frozen=True, slots=True)
class KubernetesRule:
    """One ingress or egress rule: its peers (``from`` for ingress, ``to`` for egress) and ports, in order;
    ``()`` (absent or empty) is every peer, every port."""

    peers: tuple[KubernetesPeer, ...] = ()
    ports: tuple[KubernetesPort, ...] = ()


def kubernetes_rule(rule: Mapping[str, Any], peers_key: str) -> KubernetesRule:
    """A validated Kubernetes rule, its peers under ``peers_key`` (``from`` or ``to``)."""
    return KubernetesRule(peers=tuple(_peer(p) for p in rule.get(peers_key) or ()),
                          ports=tuple(KubernetesPort(p.get("protocol") or "TCP", p.get("port"), p.get("endPort"))
                                      for p in rule.get("ports") or ()))


def _peer(peer: Mapping[str, Any]) -> KubernetesPeer:
    block = peer.get("ipBlock")
    return KubernetesPeer(
        pod_selector=peer.get("podSelector"), namespace_selector=peer.get("namespaceSelector"),
        ip_block=None if block is None else IPBlock(_network(block["cidr"]), _networks(block.get("except"))))


# -- Calico (Global)NetworkPolicy ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PortRange:
    """Ports ``first`` to ``last``, inclusive; one port when they are equal."""

    first: int
    last: int


# A Calico port: a number or ``"lo:hi"`` range (a PortRange), or a named port (an IANA service name).
CalicoPort = PortRange | str


@dataclass(frozen=True, slots=True)
class IcmpMatch:
    """A rule's ``icmp``: the ICMP type and, optionally, its code."""

    type: int
    code: int | None = None


@dataclass(frozen=True, slots=True)
class ServiceAccountMatch:
    """A side's ``serviceAccounts``: pods of these account names and/or of accounts with these labels (ANDed)."""

    names: tuple[str, ...] = ()
    selector: str | None = None


@dataclass(frozen=True, slots=True)
class CalicoEntityRule:
    """One side of a Calico rule (``source`` or ``destination``); absent is None, lists ``()``."""

    nets: tuple[IPNetwork, ...] = ()
    not_nets: tuple[IPNetwork, ...] = ()
    selector: str | None = None
    not_selector: str | None = None
    namespace_selector: str | None = None
    service_accounts: ServiceAccountMatch | None = None
    ports: tuple[CalicoPort, ...] = ()
    not_ports: tuple[CalicoPort, ...] = ()


@dataclass(frozen=True, slots=True)
class CalicoRule:
    """One Calico rule: what it matches (absent is None; an absent side matches every packet) and its action."""

    action: str                         # Allow, Deny, Log or Pass
    protocol: str | None = None         # lowercase name, or the number as text (module docstring)
    not_protocol: str | None = None
    icmp: IcmpMatch | None = None
    source: CalicoEntityRule = CalicoEntityRule()
    destination: CalicoEntityRule = CalicoEntityRule()


def calico_rule(rule: Mapping[str, Any]) -> CalicoRule:
    """A validated Calico rule."""
    icmp = rule.get("icmp") or {}
    return CalicoRule(action=rule["action"], protocol=_protocol(rule.get("protocol")),
                      not_protocol=_protocol(rule.get("notProtocol")),
                      icmp=None if icmp.get("type") is None else IcmpMatch(icmp["type"], icmp.get("code")),
                      source=_entity(rule.get("source")), destination=_entity(rule.get("destination")))


def _protocol(value: int | str | None) -> str | None:
    """The validated protocol (a canonical name, or a number 1..255) in the rule's one spelling."""
    if value is None:
        return None
    if isinstance(value, int):
        return _PROTOCOL_NAMES.get(value, str(value))
    return value.lower()


_ANY_ENTITY = CalicoEntityRule()


def _entity(entity: Mapping[str, Any] | None) -> CalicoEntityRule:
    if not entity:
        return _ANY_ENTITY   # absent or {} (the usual side): one shared value
    accounts = entity.get("serviceAccounts") or {}
    names, account_sel = tuple(accounts.get("names") or ()), accounts.get("selector")
    ports, not_ports = entity.get("ports"), entity.get("notPorts")
    return CalicoEntityRule(
        nets=_networks(entity.get("nets")), not_nets=_networks(entity.get("notNets")),
        selector=entity.get("selector"), not_selector=entity.get("notSelector"),
        namespace_selector=entity.get("namespaceSelector"),
        service_accounts=ServiceAccountMatch(names, account_sel) if names or account_sel is not None else None,
        ports=tuple(map(_port, ports)) if ports else (), not_ports=tuple(map(_port, not_ports)) if not_ports else ())


def _port(value: int | str) -> CalicoPort:
    """A validated Calico port: a number (a quoted one is a number already), a ``"lo:hi"`` range, or a name."""
    if isinstance(value, int):
        return PortRange(value, value)
    lo, sep, hi = value.partition(":")
    return PortRange(int(lo), int(hi)) if sep else value
