"""bgp.commands: what l3net wants announced, and the ExaBGP API text for it.

Pure. An :class:`Advertisement` is the desired state of one prefix towards one
peer; ``announce_command``/``withdraw_command`` render ExaBGP 5 API lines
addressed to one neighbor (``neighbor <ip> announce route ...``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class Advertisement:
    """Attributes of one announced prefix. ``next_hop=None`` means ``self`` (our local address)."""

    next_hop: str | None = None
    origin: str = "igp"
    as_path: tuple[int, ...] = ()
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    originator_id: str | None = None
    cluster_list: tuple[str, ...] = ()


def _check_prefix(prefix: str) -> str:
    return str(ipaddress.ip_network(prefix, strict=True))


def announce_command(peer: str, prefix: str, adv: Advertisement, *, ibgp: bool = True) -> str:
    """``neighbor P announce route X next-hop … [attributes]``.

    LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST are iBGP-only attributes and are
    left out towards eBGP peers.
    """
    parts = [f"neighbor {peer} announce route {_check_prefix(prefix)}",
             f"next-hop {adv.next_hop or 'self'}", f"origin {adv.origin}"]
    if adv.as_path:
        parts.append("as-path [ " + " ".join(str(a) for a in adv.as_path) + " ]")
    if adv.med is not None:
        parts.append(f"med {adv.med}")
    if ibgp and adv.local_pref is not None:
        parts.append(f"local-preference {adv.local_pref}")
    if adv.communities:
        parts.append("community [ " + " ".join(adv.communities) + " ]")
    if adv.large_communities:
        parts.append("large-community [ " + " ".join(adv.large_communities) + " ]")
    if ibgp and adv.originator_id:
        parts.append(f"originator-id {adv.originator_id}")
    if ibgp and adv.cluster_list:
        parts.append("cluster-list [ " + " ".join(adv.cluster_list) + " ]")
    return " ".join(parts)


def withdraw_command(peer: str, prefix: str) -> str:
    return f"neighbor {peer} withdraw route {_check_prefix(prefix)}"


def eor_command(peer: str, afi: str = "ipv4") -> str:
    """End-of-RIB for ``afi`` unicast to ``peer`` (RFC 4724); ExaBGP sends it after its pending updates."""
    if afi not in ("ipv4", "ipv6"):
        raise ValueError(f"unknown address family {afi!r}")
    return f"neighbor {peer} announce eor {afi} unicast"
