"""bgp.bird_config: BIRD 2 configuration of an l3net route reflector, rendered from its NodeBGPView.

Pure and deterministic (golden-file tested). The peers are the ones
:func:`bgp.view.build_node_view` computes for the reflector's Node (the same set
the ExaBGP engine uses); this module only turns them into BIRD's language:

- one ``protocol bgp`` per peer, named from its address (``Node_10_0_0_11``), so a
  peer keeps its name, and BIRD keeps its session, across reconfigurations;
- clients get ``rr client`` and the Node's ``routeReflectorClusterID``; every iBGP
  and eBGP session imports everything and exports only BGP routes (a reflector
  originates nothing; there is no kernel protocol, BIRD writes no kernel route);
- ``protocol direct`` makes directly connected next hops resolvable (BIRD keeps a
  client's next hop when it reflects, so clients must share a subnet with it or the
  reflector must be given routes some other way);
- a peer whose ``PeerSpec.bfd`` is set gets ``bfd { min rx interval ...; min tx interval
  ...; multiplier ...; }`` (its own timers: cluster default, node and peer merged by
  bgp.view) and the configuration gets one ``protocol bfd``. BIRD's BGP asks for a
  single-hop BFD session only for a ``direct`` session, and an iBGP session is multihop
  by default; the l3net agent on the other end runs single hop when its kernel reaches
  the reflector without a gateway. So the caller says which peers are on a shared link
  (``single_hop``), and those iBGP peers get ``direct;`` with ``gateway recursive`` kept
  (next hops resolve exactly as before). eBGP peers keep BIRD's own choice (direct
  unless ``multihop``/TTL security).

- ``ebgpMultihop`` (``PeerSpec.multihop``, eBGP peers only) is ``multihop N``: BIRD then sends with TTL N and
  takes the peer off its direct-neighbour check (ExaBGP's ``outgoing-ttl N``); 1 writes nothing, as BIRD's
  direct eBGP session sends with TTL 1. With ``ttlSecurity`` BIRD always sends TTL 255 and ``multihop`` is the
  accepted hop count, so a peer with both is left out with that reason.

- a peer's BGPFilter rules (``PeerSpec.import_rules``/``export_rules``, already in order and for its
  family) become its channel's ``import filter``/``export filter``, one ``if ... then accept|reject;``
  per rule, first match decides and no match takes the default (import everything, export BGP routes),
  as :mod:`bgp.policy` decides for the ExaBGP engine; ``maxPrefixes`` is ``import limit N action
  block`` (routes past the limit are not taken, the session stays; the ExaBGP engine then uses
  none of the peer's routes: BIRD has no such action). The ExaBGP engine's other safe
  defaults (IPAM route-origin checks, :func:`bgp.policy.import_reason`) are not rendered: a BIRD
  reflector reflects what its clients send.

- ``sourceAddress: None`` (``PeerSpec.source_node_ip`` false) writes ``local as N`` without an address, as
  Calico writes no ``source address``; BIRD refuses multihop BFD without a local address, so such a peer
  with BFD on a multihop session (iBGP off the link, ``ttlSecurity`` or ``ebgpMultihop``) is left out with that
  reason. ``keepOriginalNextHop`` writes ``next hop
  keep`` in the channel of an eBGP peer, as Calico's template does (to iBGP peers BIRD keeps a BGP route's
  next hop anyway).

Every value is re-serialised from a parsed one (addresses through ``ipaddress``,
numbers through ``int``); the only free text is an MD5 password, and BIRD 2's string
literal has no escapes (it ends at the next ``"``), so :func:`password_error` admits
printable ASCII without ``"`` and ``\\`` only. A peer whose values do not pass is left
out and reported as a FieldError (quarantined); the others are rendered.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from bgp.policy import ACCEPT, REJECT, FilterRule
from bgp.view import NodeBGPView, PeerSpec
from l3net.errors import FieldError
from l3net.model.validate.bgp import MAX_PASSWORD_BYTES
from l3net.model.values import MAX_ASN, MAX_RESTART_TIME

_log = logging.getLogger(__name__)

CONNECT_RETRY_TIME = 5
ERROR_WAIT_TIME = (5, 30)
# BIRD 2's lexer: a string is '"' [^"\n]* '"' with no escape sequences. We also refuse '\' (a later
# BIRD may give it a meaning) and every control or non-ASCII character (keys must be the same bytes
# on both ends, whatever the encoding of the peer's configuration).
_PASSWORD_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


def password_error(value: object) -> str | None:
    """None when ``value`` can be a BIRD MD5 password, else the reason."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > MAX_PASSWORD_BYTES:  # the characters allowed below are ASCII: one byte each
        return f"must be at most {MAX_PASSWORD_BYTES} characters"
    bad = sorted({c for c in value if c not in _PASSWORD_CHARS})
    if bad:
        return f"may hold printable ASCII except '\"' and '\\' only; refused {''.join(map(repr, bad[:5]))}"
    return None


def _ip(value: str, version: int | None = None) -> str:
    ip = ipaddress.ip_address(value)
    if version is not None and ip.version != version:
        raise ValueError(f"must be an IPv{version} address: {value!r}")
    return str(ip)


def _int(value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"must be an integer {lo}..{hi}: {value!r}")
    return int(value)


def _canonical(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def protocol_name(address: str, port: int) -> str:
    """BIRD symbol of the session with ``address``: letters, digits and '_' only (from a parsed address)."""
    text = _ip(address).replace(".", "_").replace(":", "_")
    return f"Node_{text}" if port == 179 else f"Node_{text}_port_{port}"


def bird_time(us: int) -> str:
    """A BFD interval in BIRD's syntax, from integer microseconds (whole milliseconds when exact)."""
    us = _int(us, 1, 0xFFFFFFFF)
    return f"{us // 1000} ms" if us % 1000 == 0 else f"{us} us"


@dataclass(frozen=True)
class BirdConfig:
    """A rendered configuration: its text, the BIRD protocol name of each peer address, and what was left out."""

    text: str
    protocols: dict[str, str]           # protocol name -> peer address
    errors: tuple[FieldError, ...] = ()


def _ttl_lines(p: PeerSpec) -> tuple[list[str], bool]:
    """The TTL lines of ``p`` (``ttlSecurity``, ``ebgpMultihop``) and whether BIRD makes its session multihop."""
    # ebgpMultihop (bgp.view keeps it for eBGP peers only): the TTL of our packets, BIRD's `multihop N`. 1 writes
    # nothing: BIRD's default eBGP session is direct and sends with TTL 1 already (`multihop 1` would also make
    # its BFD multihop and its next hops recursive, for a peer that is on the link).
    hops = _int(p.multihop, 1, 255) if p.multihop is not None and p.ebgp else None
    if hops is not None and p.ttl_security:
        raise ValueError(f"ebgpMultihop {hops} with ttlSecurity {p.ttl_security}: BIRD's TTL security sends every "
                         "packet with TTL 255 (its `multihop` is then the hop count accepted), so the outgoing TTL "
                         "ebgpMultihop asks for cannot be set (drop one of the two)")
    if p.ttl_security:
        return ["  ttl security on;", f"  multihop {_int(p.ttl_security, 1, 255)};"], True
    if hops is not None and hops > 1:
        return [f"  multihop {hops};"], True
    return [], False


def _peer_lines(p: PeerSpec, view: NodeBGPView, cluster_id: str | None, single_hop: bool = False) -> list[str]:
    """The ``protocol bgp`` block of one peer; ValueError names the field when a value cannot be rendered."""
    address = _ip(p.address)
    version = ipaddress.ip_address(address).version
    local = _ip(p.local_address, version)
    port = _int(p.port, 1, 65535)
    listen = _int(view.listen_port, 1, 65535)
    local_as, peer_as = _int(p.local_as, 1, MAX_ASN), _int(p.peer_as, 1, MAX_ASN)
    hold = _int(p.hold_time, 0, 65535)
    if hold and hold < 3:
        raise ValueError(f"hold time must be 0 or 3..65535: {hold}")
    # sourceAddress None: no local address, the kernel picks the source by route (Calico writes no `source address`)
    bound = f" {local}" if p.source_node_ip else ""
    lines = [f"protocol bgp {protocol_name(address, port)} {{",
             f"  local{bound}{'' if listen == 179 else f' port {listen}'} as {local_as};",
             f"  neighbor {address}{'' if port == 179 else f' port {port}'} as {peer_as};",
             f"  hold time {hold};",
             # BIRD's defaults wait 120 s before retrying a connection and 60-300 s after an error: too
             # long for a reflector whose peer restarted (the ExaBGP nodes retry about once a second)
             f"  connect retry time {CONNECT_RETRY_TIME};",
             f"  error wait time {ERROR_WAIT_TIME[0]}, {ERROR_WAIT_TIME[1]};"]
    if p.keepalive_time is not None and hold:
        keepalive = _int(p.keepalive_time, 1, 65535)
        if keepalive > hold:
            raise ValueError(f"keepalive time must be at most the hold time: {keepalive}")
        lines.append(f"  keepalive time {keepalive};")
    if p.rr_client and not p.ebgp:
        if cluster_id is None:
            raise ValueError("a route reflector client needs the Node's routeReflectorClusterID")
        lines += ["  rr client;", f"  rr cluster id {cluster_id};"]
    if p.graceful_restart:
        lines += ["  graceful restart on;", f"  graceful restart time {_int(p.restart_time, 1, MAX_RESTART_TIME)};"]
    else:
        lines.append("  graceful restart off;")
    if p.password is not None:
        reason = password_error(p.password)
        if reason:
            raise ValueError(f"password {reason}")
        lines.append(f'  password "{p.password}";')
    if p.passive:
        lines.append("  passive on;")
    ttl, multihop = _ttl_lines(p)
    lines += ttl
    direct = False
    if p.bfd is not None:
        # a direct session makes BIRD's BFD request single hop, as the agent's is for a peer on its link
        direct = single_hop and not p.ebgp and not p.ttl_security
        if not p.source_node_ip and (multihop or not (direct or p.ebgp)):
            raise ValueError("sourceAddress None with BFD on a multihop session: BIRD requires a local address "
                             "for multihop BFD (use UseNodeIP, or a peer on the reflector's own link without "
                             "ttlSecurity or ebgpMultihop)")
        if direct:
            lines.append("  direct;")
        lines.append(f"  bfd {{ min rx interval {bird_time(p.bfd.min_rx_us)}; "
                     f"min tx interval {bird_time(p.bfd.min_tx_us)}; "
                     f"multiplier {_int(p.bfd.multiplier, 1, 255)}; }};")
    channel = "ipv6" if version == 6 else "ipv4"
    # `direct` would switch next-hop resolution to direct; keep the recursive mode every other session has
    gateway = "gateway recursive; " if direct else ""
    limit = f" import limit {_int(p.max_prefixes, 1, 10_000_000)} action block;" if p.max_prefixes else ""
    # keepOriginalNextHop, as Calico writes it: eBGP peers only (to an iBGP peer BIRD keeps a BGP route's next hop)
    keep = " next hop keep;" if p.keep_next_hop and p.ebgp else ""
    if not p.import_rules and not p.export_rules:
        lines += [f"  {channel} {{ {gateway}import all; export where source = RTS_BGP;{keep}{limit} }};", "}"]
        return lines
    # BGPFilter rules, first match decides, as the ExaBGP engine's bgp.policy does; no match: the defaults.
    lines += [f"  {channel} {{",
              *([f"    {gateway.strip()}"] if gateway else []),
              "    import filter {", *_filter_lines(p.import_rules, version), "    };",
              "    export filter {", "      if source != RTS_BGP then reject;", *_filter_lines(p.export_rules, version),
              "    };",
              *([f"   {keep}"] if keep else []),
              *([f"   {limit}"] if limit else []),
              "  };", "}"]
    return lines


def _filter_lines(rules: tuple[FilterRule, ...], version: int) -> list[str]:
    """One ``if ... then accept|reject;`` per BGPFilter rule, in order, then the default (accept); a rule
    without conditions decides every route, so nothing after it is written."""
    out = []
    for r in rules:
        conds = []
        net = r.cidr
        if net is not None:
            if net.version != version:
                continue  # FilterRule.matches never matches another family
            prefix = f"{net.network_address}/{net.prefixlen}"
            conds.append({"Equal": f"net = {prefix}", "NotEqual": f"net != {prefix}", "In": f"net ~ [ {prefix}+ ]",
                          "NotIn": f"!(net ~ [ {prefix}+ ])"}[r.operator or "In"])
        if r.min_len is not None:
            conds.append(f"net.len >= {_int(r.min_len, 0, 128)}")
        if r.max_len is not None:
            conds.append(f"net.len <= {_int(r.max_len, 0, 128)}")
        verdict = {ACCEPT: "accept", REJECT: "reject"}[r.action]
        if not conds:
            return [*out, f"      {verdict};"]
        out.append(f"      if {' && '.join(f'({c})' for c in conds)} then {verdict};")
    return [*out, "      accept;"]


def render_bird_config(view: NodeBGPView, single_hop: frozenset[str] = frozenset()) -> BirdConfig:
    """BIRD 2 configuration for the reflector ``view``; raises ValueError only when the view has no identity.

    ``single_hop``: the peer addresses (canonical form) the kernel reaches without a gateway; their
    BFD sessions run single hop (RFC 5881), the others' multihop (RFC 5883).
    A peer that cannot be rendered is left out and named in ``errors`` (its field, its reason),
    so one bad BGPPeer never takes the other sessions down.
    """
    if view.router_id is None:
        raise ValueError(f"node {view.node} has no BGP address")
    router_id = _ip(view.router_id, 4)
    cluster_id = _ip(view.cluster_id, 4) if view.cluster_id else None
    lines = [
        "# generated by l3net route-reflector --engine bird; do not edit",
        f"router id {router_id};",
        "log stderr { info, remote, warning, error, auth, fatal, bug };",
        # seconds since the epoch cannot be asked for; a full local date-time parses back unambiguously
        # (milliseconds: a BFD session's "Since" times a detection)
        'timeformat protocol "%F %T.%3f";',
        "",
        "protocol device { }",
        "",
        "# connected subnets make the clients' next hops resolvable",
        "protocol direct {",
        "  ipv4;",
        "  ipv6;",
        "}",
    ]
    protocols: dict[str, str] = {}
    errors: list[FieldError] = []
    bfd = False
    for p in view.peers:
        try:
            block = _peer_lines(p, view, cluster_id, _canonical(p.address) in single_hop)
        except ValueError as exc:
            errors.append(FieldError(path=f"peer {p.name}", reason=str(exc), document=p.source))
            _log.warning("BIRD peer left out node=%s peer=%s source=%s reason=%s", view.node, p.name, p.source, exc)
            continue
        protocols[protocol_name(p.address, p.port)] = str(ipaddress.ip_address(p.address))
        lines += ["", *block]
        bfd = bfd or p.bfd is not None
    if bfd:
        # The sessions are the BGP protocols' requests, their timers in each protocol's `bfd { }`. No `accept`
        # line: its default takes every request, and each item narrows it (`accept ipv4 ipv6` means ipv6 only).
        lines += ["", "protocol bfd { }"]
    return BirdConfig(text="\n".join(lines) + "\n", protocols=protocols, errors=tuple(errors))
