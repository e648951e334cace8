"""bgp.commands: what l3net wants announced, and the ExaBGP API text for it.

Pure. An :class:`Advertisement` is the desired state of one prefix towards one
peer; ``announce_command``/``withdraw_command`` render ExaBGP 5 API lines
addressed to one neighbor (``neighbor <ip> announce route ...``).

``announce_batch_command``/``withdraw_batch_command`` render one line for many
prefixes with the same attributes towards many neighbors (ExaBGP 5's
``neighbor A , neighbor B announce attributes <attrs> nlri <p1> <p2> ...``):
a route reflector sends one command per (attributes, prefix set, neighbor set)
instead of one per prefix and neighbor, which is what ExaBGP's API parser can
keep up with. ExaBGP acks such a line once (``done``/``error``) for all of it.
All prefixes of one batch must be of one address family (ExaBGP takes the family
of the batch from its last prefix).

Every word is re-serialised from a typed value (addresses and prefixes through
``ipaddress`` without scope IDs, numbers from ints) or checked against a strict grammar
(communities, origin): a value that would add a word or a line raises ValueError.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from bgp.attrs import PathAttrs

_COMMUNITY = re.compile(r"[0-9]{1,10}:[0-9]{1,10}")
_LARGE_COMMUNITY = re.compile(r"[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}")
_ORIGINS = ("igp", "egp", "incomplete")


@dataclass(frozen=True)
class Advertisement(PathAttrs):
    """One announced prefix: its path attributes (:class:`bgp.attrs.PathAttrs`) and the next hop to
    announce. ``next_hop=None`` means ``self`` (our local address)."""

    next_hop: str | None = None

    @classmethod
    def of(cls, attrs: PathAttrs, next_hop: str | None, **changes: Any) -> Advertisement:
        """``attrs`` announced with ``next_hop`` (and the attributes in ``changes`` replaced)."""
        values = {f.name: getattr(attrs, f.name) for f in fields(PathAttrs)}
        return cls(next_hop=next_hop, **{**values, **changes})


def _check_prefix(prefix: str) -> str:
    if "%" in prefix:
        raise ValueError(f"a prefix with a scope ID: {prefix!r}")
    return str(ipaddress.ip_network(prefix, strict=True))


def _ip(value: str) -> str:
    """An address re-serialised from its integer: no scope ID, nothing after it."""
    if not isinstance(value, str) or "%" in value:
        raise ValueError(f"not an IP address without scope: {value!r}")
    addr = ipaddress.ip_address(value)
    return str(type(addr)(int(addr)))


def _uint(value: int, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise ValueError(f"not a {bits}-bit number: {value!r}")
    return value


def _words(values: Sequence[str], grammar: re.Pattern[str], what: str) -> str:
    for v in values:
        if not isinstance(v, str) or not grammar.fullmatch(v):
            raise ValueError(f"not a {what}: {v!r}")
    return " ".join(values)


def attribute_text(adv: Advertisement, *, ibgp: bool = True) -> str:
    """The path attributes of ``adv`` as ExaBGP API words (``next-hop … origin … [as-path …] …``).

    LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST are iBGP-only attributes and are
    left out towards eBGP peers.
    """
    if adv.origin not in _ORIGINS:
        raise ValueError(f"not an origin: {adv.origin!r}")
    parts = [f"next-hop {_ip(adv.next_hop) if adv.next_hop else 'self'}", f"origin {adv.origin}"]
    if adv.as_path:
        parts.append("as-path [ " + " ".join(str(_uint(a, 32)) for a in adv.as_path) + " ]")
    if adv.med is not None:
        parts.append(f"med {_uint(adv.med, 32)}")
    if ibgp and adv.local_pref is not None:
        parts.append(f"local-preference {_uint(adv.local_pref, 32)}")
    if adv.communities:
        parts.append("community [ " + _words(adv.communities, _COMMUNITY, "community") + " ]")
    if adv.large_communities:
        parts.append("large-community [ " + _words(adv.large_communities, _LARGE_COMMUNITY, "large community") + " ]")
    if ibgp and adv.originator_id:
        parts.append(f"originator-id {_ip(adv.originator_id)}")
    if ibgp and adv.cluster_list:
        parts.append("cluster-list [ " + " ".join(_ip(c) for c in adv.cluster_list) + " ]")
    return " ".join(parts)


def announce_command(peer: str, prefix: str, adv: Advertisement, *, ibgp: bool = True) -> str:
    """``neighbor P announce route X next-hop … [attributes]`` (see :func:`attribute_text`)."""
    return f"neighbor {_ip(peer)} announce route {_check_prefix(prefix)} {attribute_text(adv, ibgp=ibgp)}"


def neighbor_selector(peers: Sequence[str]) -> str:
    """``neighbor A , neighbor B …``: the ExaBGP API prefix that addresses a command to several neighbors."""
    if not peers:
        raise ValueError("a command needs at least one neighbor")
    return " , ".join(f"neighbor {_ip(p)}" for p in peers)


def _check_batch(prefixes: Sequence[str]) -> list[str]:
    if not prefixes:
        raise ValueError("a batch needs at least one prefix")
    nets = [ipaddress.ip_network(_check_prefix(p), strict=True) for p in prefixes]
    if len({n.version for n in nets}) != 1:
        raise ValueError("a batch mixes IPv4 and IPv6 prefixes")
    return [str(n) for n in nets]


def announce_batch_command(peers: Sequence[str], prefixes: Sequence[str], adv: Advertisement, *,
                           ibgp: bool = True) -> str:
    """One line announcing ``prefixes`` (one family) with ``adv``'s attributes to every neighbor in ``peers``."""
    return (f"{neighbor_selector(peers)} announce attributes {attribute_text(adv, ibgp=ibgp)} "
            f"nlri {' '.join(_check_batch(prefixes))}")


def withdraw_batch_command(peers: Sequence[str], prefixes: Sequence[str]) -> str:
    """One line withdrawing ``prefixes`` (one family) from every neighbor in ``peers``."""
    return f"{neighbor_selector(peers)} withdraw attributes nlri {' '.join(_check_batch(prefixes))}"


def withdraw_command(peer: str, prefix: str) -> str:
    return f"neighbor {_ip(peer)} withdraw route {_check_prefix(prefix)}"


def eor_command(peer: str, afi: str = "ipv4") -> str:
    """End-of-RIB for ``afi`` unicast to ``peer`` (RFC 4724); ExaBGP sends it after its pending updates."""
    if afi not in ("ipv4", "ipv6"):
        raise ValueError(f"unknown address family {afi!r}")
    return f"neighbor {_ip(peer)} announce eor {afi} unicast"


def refresh_command(peer: str, afi: str = "ipv4") -> str:
    """Ask ``peer`` to re-send its routes of ``afi`` unicast (RFC 2918), e.g. after an import filter changed."""
    if afi not in ("ipv4", "ipv6"):
        raise ValueError(f"unknown address family {afi!r}")
    return f"neighbor {_ip(peer)} announce route-refresh {afi} unicast"


def teardown_command(peer: str, subcode: int) -> str:
    """``neighbor P teardown N``: ExaBGP closes the session with a Cease NOTIFICATION of subcode ``N``."""
    if not 1 <= subcode <= 255:
        raise ValueError(f"subcode: {subcode} is outside 1..255")
    return f"neighbor {ipaddress.ip_address(peer)} teardown {subcode}"
