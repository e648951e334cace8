"""bgp.exabgp_config: ExaBGP's configuration text and environment for a node's BGP view.

Pure: ``render_exabgp_config`` writes only re-serialised values (see
``docs/security.md``), so nothing a resource says can break ExaBGP's parser.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import re
from typing import Any

from bgp.exabgp_run import keepalive_word
from bgp.view import PEER_GLOBAL, PEER_MESH, PEER_NODE, PEER_RR, NodeBGPView, PeerSpec
from l3net.constants import BGP_PORT
from l3net.model.values import MAX_ASN, MAX_RESTART_TIME

_log = logging.getLogger(__name__)


def canonical_ip(value: str) -> str:
    """``value`` re-serialised from its integer (no scope ID, no stray text); ValueError otherwise."""
    if not isinstance(value, str) or "%" in value:
        raise ValueError(f"not an IP address without scope: {value!r}")
    addr = ipaddress.ip_address(value)
    return str(type(addr)(int(addr)))


PROCESS_NAME = "l3net-bridge"


# What may appear in ExaBGP's configuration. ExaBGP un-escapes quoted strings before it
# tokenises them, so no quoting is trusted: every value is re-serialised from a typed value
# (addresses from integers, numbers from ints) or checked against a grammar with no quote,
# space, ';', '{', '}', '#', '[' or ']' and no control character.
_ARGV_WORD = re.compile(r"[A-Za-z0-9_./=+:@-]+")
_NAME_WORD = re.compile(r"[A-Za-z0-9_]+")
_NODE_WORD = re.compile(r"[A-Za-z0-9_.-]+")
_PEER_TYPES = frozenset({PEER_MESH, PEER_GLOBAL, PEER_NODE, PEER_RR})


def md5_base64(password: str) -> str:
    """The password as ExaBGP's ``md5-base64`` form: the alphabet ``[A-Za-z0-9+/=]`` breaks no parser."""
    return base64.b64encode(password.encode("utf-8")).decode("ascii")


def _int(value: Any, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{what} must be an integer {lo}..{hi}, not {value!r}")
    return value


def _keepalive_word(p: PeerSpec) -> str:
    """keepaliveTime, carried to :mod:`bgp.exabgp_run` in the description (ExaBGP has no keepalive setting)."""
    if p.keepalive_time is None:
        return ""
    return " " + keepalive_word(_int(max(1, int(p.keepalive_time)), 1, 65535, "keepalive"))


def _local_address(p: PeerSpec) -> str:
    """``local-address``: the node's address (sourceAddress UseNodeIP), or ``auto`` for sourceAddress None, where
    ExaBGP connects unbound and the kernel picks the source by route (ExaBGP then takes it as its local address,
    for ``next-hop self`` too). A passive session keeps the node's address: it never connects, so its local end
    is the address the peer connected to, and ExaBGP listens on the node's addresses only."""
    address = canonical_ip(p.local_address)
    return "auto" if not p.source_node_ip and not p.passive else address


def _neighbor_block(view: NodeBGPView, p: PeerSpec) -> list[str]:
    """The ``neighbor`` block of ``p``; ValueError when any value is outside its grammar."""
    if not _NAME_WORD.fullmatch(p.name) or p.peer_type not in _PEER_TYPES:
        raise ValueError(f"peer name {p.name!r} or type {p.peer_type!r} is outside the grammar")
    address = canonical_ip(p.address)
    lines = [
        f"neighbor {address} {{",
        f'    description "{p.name} ({p.peer_type}){_keepalive_word(p)}";',
        f"    router-id {ipaddress.IPv4Address(canonical_ip(view.router_id or ''))};",
        f"    local-address {_local_address(p)};",
        f"    local-as {_int(p.local_as, 1, MAX_ASN, 'local-as')};",
        f"    peer-as {_int(p.peer_as, 1, MAX_ASN, 'peer-as')};",
        f"    hold-time {_int(p.hold_time, 0, 65535, 'hold-time')};",
        "    manual-eor true;",
    ]
    if p.port != BGP_PORT:
        lines.append(f"    connect {_int(p.port, 1, 65535, 'port')};")
    if p.passive:
        lines.append("    passive true;")
    if p.password:
        lines.append(f"    md5-password {md5_base64(p.password)};")
        lines.append("    md5-base64 true;")
    if p.ttl_security:
        # ttlSecurity counts hops (GTSM, RFC 5082: the peer sends 255, each hop takes one); ExaBGP's
        # incoming-ttl is the lowest TTL accepted (IP_MINTTL), and makes ExaBGP send 255 itself.
        lines.append(f"    incoming-ttl {256 - _int(p.ttl_security, 1, 255, 'ttlSecurity')};")
    if p.multihop:
        lines.append(f"    outgoing-ttl {_int(p.multihop, 1, 255, 'ebgpMultihop')};")
    lines.append("    capability {")
    lines.append("        route-refresh;")
    if p.graceful_restart:
        lines.append(f"        graceful-restart {_int(p.restart_time, 1, MAX_RESTART_TIME, 'restart time')};")
    lines.append("    }")
    lines.append(f"    family {{ {'ipv6' if ':' in address else 'ipv4'} unicast; }}")
    lines.append("    api {")
    lines.append(f"        processes [ {PROCESS_NAME} ];")
    lines.append("        neighbor-changes;")
    lines.append("        receive { parsed; update; open; }")
    lines.append("    }")
    lines.append("}")
    return lines


def render_exabgp_config(view: NodeBGPView, helper_argv: list[str]) -> str:
    """ExaBGP 5 configuration text for ``view``; the API process runs ``helper_argv``.

    ExaBGP has no keepalive setting (it sends keepalives every hold/3), so
    ``keepaliveTime`` is recorded as a comment only. ``manual-eor``: ExaBGP would send
    End-of-RIB as soon as its (empty) configured table is out, before the speaker's
    announcements arrive over the API, and a graceful-restart peer sweeps our routes on
    that EOR; the speaker sends EOR itself after the full table. ``receive { open; }``
    gives the speaker the peer's graceful-restart capability. MD5 passwords are written
    base64-encoded (``md5-base64 true``): ExaBGP decodes them to the exact bytes.

    A peer with a value outside its grammar (only possible if a caller bypassed
    ``build_node_view``) is left out and logged; the rest is rendered.
    """
    bad = [a for a in helper_argv if not _ARGV_WORD.fullmatch(a)]
    if bad:
        raise ValueError(f"helper argv words must match {_ARGV_WORD.pattern}: {bad!r}")
    lines = [
        f"# generated by l3net for node {view.node if _NODE_WORD.fullmatch(view.node) else '?'}; do not edit",
        f"process {PROCESS_NAME} {{",
        f"    run {' '.join(helper_argv)};",
        "    encoder json;",
        "}",
    ]
    for p in view.peers:
        try:
            block = _neighbor_block(view, p)
        except ValueError as exc:
            _log.error("BGP peer left out of the ExaBGP configuration node=%s peer=%s reason=%s",
                       view.node, p.name, exc)
            continue
        lines.append("")
        lines.extend(block)
    return "\n".join(lines) + "\n"


EXABGP_REACTOR_SPEED = "10"   # idle poll of 100 ms


def exabgp_env(view: NodeBGPView) -> dict[str, str]:
    """Environment for the ExaBGP process of ``view`` (testbed-facts §3: root helper, no CLI pipe)."""
    return {
        "exabgp_daemon_user": "root",
        "exabgp_daemon_daemonize": "false",
        "exabgp_api_cli": "false",
        "exabgp_api_ack": "true",
        "exabgp_api_respawn": "true",
        "exabgp_api_encoder": "json",
        "exabgp_tcp_bind": " ".join(view.local_addresses),
        "exabgp_tcp_port": str(view.listen_port),
        "exabgp_log_destination": "stderr",
        "exabgp_log_level": "WARNING" if view.log_severity.lower() in ("warning", "error", "fatal") else "INFO",
        # ExaBGP's reactor polls every speed/100 s when idle (10 ms at its default 1.0: 2.3 % of a core
        # doing nothing; 25 ms: the agent and ExaBGP at 1.25 %; 50 ms: ExaBGP alone 0.8 %, each turn
        # ~0.4 ms of Python for one peer). Commands from the bridge and data on established sessions wake
        # it at once, and API work left queued after a turn (over 50 steps) runs at once too
        # (bgp.exabgp_run.patch_async_backlog); only a new incoming TCP connection waits up to one poll.
        "exabgp_reactor_speed": EXABGP_REACTOR_SPEED,
    }
