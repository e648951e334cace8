"""l3net.model.validate.addresses: IP addresses, CIDRs and BGP peer addresses.

Owns what counts as a network (``address/prefix`` with no host bits set, stored as written), an
address of a given family, a node's interface address (host bits allowed), the check of a BGP peer
address (its grammar: :func:`l3net.model.values.parse_peer_ip`) and whether two pools overlap.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from l3net.model.validate.checker import Check, Checker, short, typename
from l3net.model.values import parse_peer_ip

_log = logging.getLogger(__name__)

__all__ = ["SCOPE_REASON", "IPNetwork", "cidr", "cidr_of", "interface_address", "ip_address", "parse_cidr",
           "parse_peer_ip", "peer_ip", "pools_overlap", "scope_reason"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Python's ipaddress keeps an IPv6 scope ID (``fd00::2%eth0``) verbatim, newlines included, and
# prints it back: nothing l3net hands to another program may carry one, so none is accepted.
SCOPE_REASON = "IPv6 scope IDs (%zone) are not allowed"


def scope_reason(value: str) -> str:
    """A reason to refuse ``value`` when it carries an IPv6 scope ID, else ``""``."""
    return f"{short(value)}: {SCOPE_REASON}" if "%" in value else ""


def parse_cidr(value: str) -> tuple[IPNetwork | None, str]:
    """``(network, "")`` for a CIDR with no host bits set, else ``(None, reason)``."""
    if "%" in value:
        return None, scope_reason(value)
    if "/" not in value:
        return None, f"{value!r} is not a CIDR (expected address/prefix-length, e.g. 10.0.0.0/16)"
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        return None, f"{value!r} is not a valid CIDR: {exc}"
    if net.network_address != ipaddress.ip_interface(value).ip:
        return None, f"{value!r} has host bits set (did you mean {net}?)"
    return net, ""


def cidr(c: Checker, value: Any, path: str) -> Any:
    """A network in CIDR notation with no host bits set; stored as written."""
    if not isinstance(value, str):
        return c.error(path, f"must be a CIDR string, not {typename(value)}")
    net, reason = parse_cidr(value)
    return value if net else c.error(path, reason)


def cidr_of(version: int) -> Check:
    """A CIDR (see :func:`cidr`) of IP ``version``."""

    def check(c: Checker, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            return c.error(path, f"must be a CIDR string, not {typename(value)}")
        net, reason = parse_cidr(value)
        if net is None:
            return c.error(path, reason)
        if net.version != version:
            return c.error(path, f"{value!r} is not an IPv{version} CIDR")
        return value

    return check


def ip_address(version: int | None = None) -> Check:
    """An IP address string, of IP ``version`` when given."""

    def check(c: Checker, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            return c.error(path, f"must be an IP address string, not {typename(value)}")
        if "%" in value:
            return c.error(path, scope_reason(value))
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            return c.error(path, f"{value!r} is not a valid IP address")
        if version and addr.version != version:
            return c.error(path, f"{value!r} is not an IPv{version} address")
        return value

    return check


def interface_address(version: int) -> Check:
    """``10.0.0.11/24`` or ``10.0.0.11`` (a node's address; host bits are the point)."""

    def check(c: Checker, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            return c.error(path, f"must be an IP address string, not {typename(value)}")
        if "%" in value:
            return c.error(path, scope_reason(value))
        try:
            iface = ipaddress.ip_interface(value)
        except ValueError:
            return c.error(path, f"{value!r} is not a valid IPv{version} address (optionally with /prefix)")
        if iface.version != version:
            return c.error(path, f"{value!r} is not an IPv{version} address")
        return value

    return check


def peer_ip(c: Checker, value: Any, path: str) -> Any:
    """A BGPPeer ``peerIP``: see :func:`l3net.model.values.parse_peer_ip`; stored as written."""
    try:
        parse_peer_ip(value)
    except ValueError as exc:
        return c.error(path, str(exc))
    return value


def pools_overlap(a: str, b: str) -> bool:
    """True when two CIDR strings share any address (different families never do)."""
    na, nb = ipaddress.ip_network(a, strict=False), ipaddress.ip_network(b, strict=False)
    return na.version == nb.version and na.overlaps(nb)  # type: ignore[arg-type]
