"""bgp.config: a node's BGP peer set from the datastore's resources, and its ExaBGP configuration.

Pure and deterministic (golden-file tested): ``build_node_view`` turns Node,
BGPConfiguration and BGPPeer resources into a :class:`NodeBGPView` the way
Calico's confd does for BIRD (``bgp_processor.go``):

- full iBGP mesh between nodes by default (AS 64512), named ``Mesh_<ip>``; the side
  with the higher address is passive, so the pair never collides (2.4 s vs 0.34 s);
- nodes with ``routeReflectorClusterID`` are left out of the mesh;
- ``nodeToNodeMeshEnabled: false`` turns the mesh off;
- BGPPeers: global (no ``node``/``nodeSelector``, named ``Global_<ip>``), per node
  (``node``) or by ``nodeSelector`` (``Node_<ip>``); ``peerSelector`` selects other
  nodes, and a node selected by a peerSelector peers back with the nodes of the
  nodeSelector (so both sides configure the session, as Calico does);
- a route reflector treats a node peer without a cluster ID as its client;
- AS per node (``Node.spec.bgp.asNumber``): eBGP when the ASNs differ (RFC 7938).

A BGPPeer that cannot be right is refused as a whole (``NodeBGPView.errors`` names
the field and reason, ``check_bgp_peer`` returns the same for validation at the
edge); it never adds a partial peering.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bgp.selectors import compile_selector, selector_error
from l3net.constants import BGP_PORT, DEFAULT_AS_NUMBER
from l3net.errors import FieldError
from l3net.model.validate.bfd import BfdSettings, resolve_bfd

_log = logging.getLogger(__name__)

DEFAULT_HOLD_TIME = 90
DEFAULT_RESTART_TIME = 120
MAX_RESTART_TIME = 4095   # the capability's restart time is a 12-bit field (RFC 4724 §3)
MAX_ASN = 4294967295

PEER_MESH = "node-to-node mesh"
PEER_GLOBAL = "global"
PEER_NODE = "node specific"
PEER_RR = "route reflector"

_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


@dataclass(frozen=True)
class PeerSpec:
    """One BGP session of this node, with every setting ExaBGP needs."""

    name: str                 # Calico's protocol name: Mesh_10_0_0_2, Global_…, Node_…
    peer_type: str            # PEER_MESH | PEER_GLOBAL | PEER_NODE | PEER_RR
    address: str
    port: int
    local_address: str
    local_as: int
    peer_as: int
    passive: bool
    hold_time: int
    keepalive_time: int | None = None
    password: str | None = None
    graceful_restart: bool = True
    restart_time: int = DEFAULT_RESTART_TIME
    rr_client: bool = False   # this node is a route reflector and the peer is its client
    peer_node: str | None = None
    ttl_security: int = 0
    source: str = ""          # the resource this peering comes from
    bfd: BfdSettings | None = None  # set only when BFD is enabled for this peer

    @property
    def ebgp(self) -> bool:
        return self.local_as != self.peer_as

    @property
    def afi(self) -> str:
        return "ipv6" if ":" in self.address else "ipv4"


@dataclass(frozen=True)
class Community:
    """A community to attach to advertisements within ``cidr`` (``a:b`` or large ``a:b:c``)."""

    cidr: str
    value: str


@dataclass(frozen=True)
class NodeBGPView:
    """Everything the speaker of one node needs: identity, listen settings and peers."""

    node: str
    router_id: str | None
    address_v4: str | None
    address_v6: str | None
    as_number: int
    listen_port: int = BGP_PORT
    cluster_id: str | None = None
    log_severity: str = "Info"
    peers: tuple[PeerSpec, ...] = ()
    communities: tuple[Community, ...] = ()
    errors: tuple[FieldError, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.router_id is not None

    @property
    def local_addresses(self) -> tuple[str, ...]:
        return tuple(a for a in (self.address_v4, self.address_v6) if a)

    def peer(self, address: str) -> PeerSpec | None:
        for p in self.peers:
            if p.address == address:
                return p
        return None

    def communities_for(self, prefix: str) -> tuple[str, ...]:
        """Communities of ``prefixAdvertisements`` whose cidr covers ``prefix``."""
        net = ipaddress.ip_network(prefix, strict=False)
        out: list[str] = []
        for c in self.communities:
            cnet = ipaddress.ip_network(c.cidr, strict=False)
            if cnet.version == net.version and net.subnet_of(cnet) and c.value not in out:  # type: ignore[arg-type]
                out.append(c.value)
        return tuple(out)


# -- small parsers -------------------------------------------------------------------------
def parse_duration(value: Any) -> float:
    """``"3s"``, ``"1m30s"``, ``"500ms"``, ``90`` -> seconds; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"negative duration: {value!r}")
        return float(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"not a duration: {value!r}")
    if value.isdigit():
        return float(value)
    m = _DURATION_RE.match(value)
    if not m or not any(m.groups()):
        raise ValueError(f"not a duration (use e.g. '3s', '1m30s'): {value!r}")
    h, mi, s, ms = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0) + int(ms or 0) / 1000


def _split_cidr_ip(value: Any) -> str | None:
    """``10.0.0.1/24`` -> ``10.0.0.1``; None for empty/invalid."""
    if not value or not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_interface(value).ip)
    except ValueError:
        return None


def parse_peer_ip(value: str) -> tuple[str, int]:
    """``10.0.0.1``, ``10.0.0.1:1790``, ``[fd00::1]:1790``, ``fd00::1`` -> (ip, port)."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be an IP address, optionally with :port")
    port = BGP_PORT
    host = value
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"bad port in {value!r}")
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, _, p = value.partition(":")
        if not p.isdigit():
            raise ValueError(f"bad port in {value!r}")
        port = int(p)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not an IP address: {host!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    return str(ip), port


def _asn(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"not an AS number: {value!r}")
    text = str(value)
    if "." in text:  # asdot
        hi, _, lo = text.partition(".")
        if not hi.isdigit() or not lo.isdigit() or int(hi) > 65535 or int(lo) > 65535:
            raise ValueError(f"not an AS number: {value!r}")
        return int(hi) * 65536 + int(lo)
    if not text.isdigit() or not 0 < int(text) <= MAX_ASN:
        raise ValueError(f"AS number must be 1..{MAX_ASN}: {value!r}")
    return int(text)


def _community_ok(value: str) -> bool:
    parts = value.split(":")
    if len(parts) == 2:
        return all(p.isdigit() and int(p) <= 65535 for p in parts)
    if len(parts) == 3:
        return all(p.isdigit() and int(p) <= MAX_ASN for p in parts)
    return False


# -- validation ----------------------------------------------------------------------------
def check_bgp_peer(spec: Mapping[str, Any], document: str = "") -> list[FieldError]:
    """Every reason a BGPPeer spec cannot be right (empty when it is fine)."""
    errs: list[FieldError] = []

    def err(path: str, reason: str) -> None:
        errs.append(FieldError(path=f"spec.{path}", reason=reason, document=document))

    if not isinstance(spec, Mapping):
        return [FieldError(path="spec", reason="must be a mapping", document=document)]
    has_ip, has_sel = bool(spec.get("peerIP")), bool(spec.get("peerSelector"))
    if has_ip == has_sel:
        err("peerIP", "exactly one of peerIP and peerSelector must be set")
    if has_ip:
        try:
            parse_peer_ip(spec["peerIP"])
        except ValueError as exc:
            err("peerIP", str(exc))
        if spec.get("asNumber") in (None, ""):
            err("asNumber", "required with peerIP")
    if spec.get("node") and spec.get("nodeSelector"):
        err("node", "node and nodeSelector are mutually exclusive")
    for key in ("nodeSelector", "peerSelector"):
        if spec.get(key):
            reason = selector_error(spec[key])
            if reason:
                err(key, f"invalid selector: {reason}")
    if spec.get("asNumber") not in (None, ""):
        try:
            _asn(spec["asNumber"])
        except ValueError as exc:
            err("asNumber", str(exc))
    for key in ("holdTime", "keepaliveTime", "maxRestartTime"):
        if spec.get(key) not in (None, ""):
            try:
                seconds = parse_duration(spec[key])
            except ValueError as exc:
                err(key, str(exc))
                continue
            if key == "holdTime" and seconds and not 3 <= seconds <= 65535:
                err(key, "hold time must be 0 or 3..65535 seconds (RFC 4271)")
            if key == "maxRestartTime" and not 1 <= seconds <= MAX_RESTART_TIME:
                err(key, f"restart time must be 1..{MAX_RESTART_TIME} seconds (RFC 4724)")
    if spec.get("holdTime") and spec.get("keepaliveTime"):
        try:
            if parse_duration(spec["keepaliveTime"]) * 3 > parse_duration(spec["holdTime"]):
                err("keepaliveTime", "must be at most a third of holdTime")
        except ValueError:
            pass
    pw = spec.get("password")
    if pw is not None and (not isinstance(pw, Mapping) or not isinstance(pw.get("value"), str)
                           or not pw.get("value") or len(pw["value"]) > 80):
        err("password", "must be {value: <1..80 characters>}")
    if spec.get("sourceAddress") not in (None, "UseNodeIP", "None"):
        err("sourceAddress", "must be UseNodeIP or None")
    ttl = spec.get("ttlSecurity")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 255):
        err("ttlSecurity", "must be an integer 0..255")
    return errs


# -- view ----------------------------------------------------------------------------------
@dataclass
class _NodeInfo:
    name: str
    labels: Mapping[str, str]
    v4: str | None
    v6: str | None
    asn: int | None
    cluster_id: str | None


def _node_info(res: Any) -> _NodeInfo:
    b = (res.spec or {}).get("bgp") or {}
    asn: int | None = None
    if b.get("asNumber") not in (None, ""):
        try:
            asn = _asn(b["asNumber"])
        except ValueError:
            _log.warning("node has a bad asNumber, using the default node=%s value=%r", res.name, b["asNumber"])
    return _NodeInfo(res.name, dict(res.labels or {}), _split_cidr_ip(b.get("ipv4Address")),
                     _split_cidr_ip(b.get("ipv6Address")), asn, b.get("routeReflectorClusterID") or None)


def _peer_name(prefix: str, ip: str, port: int) -> str:
    base = f"{prefix}_{ip.replace('.', '_').replace(':', '_')}"
    return base if port == BGP_PORT else f"{base}_port_{port}"


@dataclass
class _Defaults:
    asn: int = DEFAULT_AS_NUMBER
    mesh: bool = True
    listen_port: int = BGP_PORT
    hold: int = DEFAULT_HOLD_TIME
    keepalive: int | None = None
    gr: bool = True
    restart: int = DEFAULT_RESTART_TIME
    mesh_password: str | None = None
    log_severity: str = "Info"
    communities: list[Community] = field(default_factory=list)
    bfd_layers: list[Mapping[str, Any]] = field(default_factory=list)  # cluster, then node.<node>


def _bfd_for(layers: list[Mapping[str, Any]], doc: str, errors: list[FieldError]) -> BfdSettings | None:
    """The BFD settings of one peering, or None when BFD is off; bad settings mean no BFD, reported."""
    try:
        settings = resolve_bfd(*layers)
    except ValueError as exc:
        errors.append(FieldError(path="spec.bfd", reason=str(exc), document=doc))
        return None
    return settings if settings.enabled else None


def _read_configs(node: str, bgp_configs: Iterable[Any], errors: list[FieldError]) -> _Defaults:
    d = _Defaults()
    by_name = {c.name: c for c in bgp_configs}
    for cfg in (by_name.get("default"), by_name.get(f"node.{node}")):
        if cfg is None:
            continue
        s = cfg.spec or {}
        doc = cfg.ref if hasattr(cfg, "ref") else cfg.name
        try:
            if "asNumber" in s and cfg.name == "default":
                d.asn = _asn(s["asNumber"])
            if "nodeToNodeMeshEnabled" in s and cfg.name == "default":
                d.mesh = bool(s["nodeToNodeMeshEnabled"])
            if "listenPort" in s:
                d.listen_port = int(s["listenPort"])
            if "holdTime" in s:
                d.hold = int(parse_duration(s["holdTime"]))
            if "keepaliveTime" in s:
                d.keepalive = int(parse_duration(s["keepaliveTime"]))
            if "gracefulRestart" in s:
                d.gr = bool(s["gracefulRestart"])
            if (s.get("nodeMeshPassword") or {}).get("value"):
                d.mesh_password = s["nodeMeshPassword"]["value"]
            if "logSeverityScreen" in s:
                d.log_severity = str(s["logSeverityScreen"])
            if isinstance(s.get("bfd"), Mapping):
                d.bfd_layers.append(s["bfd"])
        except (ValueError, TypeError) as exc:
            errors.append(FieldError(path="spec", reason=str(exc), document=doc))
        if "restartTime" in s:
            try:
                restart = parse_duration(s["restartTime"])
                if not 1 <= restart <= MAX_RESTART_TIME:
                    raise ValueError(f"must be 1..{MAX_RESTART_TIME} seconds (RFC 4724)")
                d.restart = int(restart)
            except ValueError as exc:
                errors.append(FieldError(path="spec.restartTime", reason=str(exc), document=doc))
        named = {c.get("name"): c.get("value") for c in s.get("communities") or [] if isinstance(c, Mapping)}
        for i, adv in enumerate(s.get("prefixAdvertisements") or []):
            for j, ref in enumerate(adv.get("communities") or []):
                value = named.get(ref, ref)
                if not isinstance(value, str) or not _community_ok(value):
                    errors.append(FieldError(path=f"spec.prefixAdvertisements[{i}].communities[{j}]",
                                             reason=f"unknown community name or bad value: {ref!r}", document=doc))
                    continue
                d.communities.append(Community(str(adv.get("cidr")), value))
    return d


def build_node_view(node_name: str, nodes: Iterable[Any], bgp_configs: Iterable[Any],
                    bgp_peers: Iterable[Any]) -> NodeBGPView:
    """The BGP peer set of ``node_name`` (Resources in, a frozen view out; pure)."""
    errors: list[FieldError] = []
    infos = {n.name: _node_info(n) for n in nodes}
    defaults = _read_configs(node_name, bgp_configs, errors)
    me = infos.get(node_name)
    if me is None or (me.v4 is None and me.v6 is None):
        return NodeBGPView(node=node_name, router_id=None, address_v4=None, address_v6=None,
                           as_number=defaults.asn, errors=tuple(errors))
    my_as = me.asn or defaults.asn
    peers: dict[tuple[str, int], PeerSpec] = {}
    rank = {PEER_MESH: 0, PEER_GLOBAL: 1, PEER_NODE: 2, PEER_RR: 2}

    def local_for(ip: str) -> str | None:
        return me.v6 if ":" in ip else me.v4

    def add(spec: PeerSpec) -> None:
        key = (spec.address, spec.port)
        if spec.address in (me.v4, me.v6):
            return
        old = peers.get(key)
        if old is None or rank[spec.peer_type] > rank[old.peer_type]:
            peers[key] = spec

    def node_peer(other: _NodeInfo, kind: str, prefix: str, *, hold: int, keepalive: int | None,
                  password: str | None, source: str, ttl: int = 0, restart: int | None = None,
                  bfd: BfdSettings | None = None) -> None:
        for ip in (other.v4, other.v6):
            if ip is None:
                continue
            local = local_for(ip)
            if local is None:
                continue
            peer_type = PEER_RR if (other.cluster_id and not me.cluster_id) else kind
            add(PeerSpec(
                name=_peer_name(prefix, ip, BGP_PORT), peer_type=peer_type, address=ip,
                port=defaults.listen_port, local_address=local, local_as=my_as,
                peer_as=other.asn or defaults.asn,
                # both sides run l3net: the higher address waits for the lower one to connect
                passive=ipaddress.ip_address(local) > ipaddress.ip_address(ip),
                hold_time=hold, keepalive_time=keepalive, password=password, graceful_restart=defaults.gr,
                restart_time=restart if restart is not None else defaults.restart,
                rr_client=bool(me.cluster_id) and not other.cluster_id, peer_node=other.name,
                ttl_security=ttl, source=source, bfd=bfd))

    # 1. full mesh (route reflectors stay out of it, on both sides)
    mesh_bfd = _bfd_for(defaults.bfd_layers, "BGPConfiguration/default", errors)
    if defaults.mesh and not me.cluster_id:
        for other in sorted(infos.values(), key=lambda n: n.name):
            if other.name == node_name or other.cluster_id:
                continue
            node_peer(other, PEER_MESH, "Mesh", hold=defaults.hold, keepalive=defaults.keepalive,
                      password=defaults.mesh_password, source="node-to-node mesh", bfd=mesh_bfd)

    # 2. explicit BGPPeers
    for res in sorted(bgp_peers, key=lambda r: r.name):
        s = res.spec or {}
        doc = res.ref if hasattr(res, "ref") else res.name
        problems = check_bgp_peer(s, doc)
        if problems:
            errors.extend(problems)
            _log.warning("BGPPeer refused peer=%s reasons=%s", res.name, "; ".join(str(p) for p in problems))
            continue
        is_global = not s.get("node") and not s.get("nodeSelector")
        kind, prefix = (PEER_GLOBAL, "Global") if is_global else (PEER_NODE, "Node")

        def selects(n: _NodeInfo, s: Mapping[str, Any] = s, is_global: bool = is_global) -> bool:
            if is_global:
                return True
            if s.get("node"):
                return n.name == s["node"]
            return compile_selector(s["nodeSelector"])(n.labels)

        hold = int(parse_duration(s["holdTime"])) if s.get("holdTime") else defaults.hold
        keepalive = int(parse_duration(s["keepaliveTime"])) if s.get("keepaliveTime") else defaults.keepalive
        password = (s.get("password") or {}).get("value")
        restart = int(parse_duration(s["maxRestartTime"])) if s.get("maxRestartTime") else None
        ttl = int(s.get("ttlSecurity") or 0)
        bfd = _bfd_for([*defaults.bfd_layers, s.get("bfd") or {}], doc, errors)
        if s.get("peerIP"):
            if not selects(me):
                continue
            ip, port = parse_peer_ip(s["peerIP"])
            local = local_for(ip)
            if local is None:
                continue
            target = next((n for n in infos.values() if ip in (n.v4, n.v6)), None)
            ptype = PEER_RR if target is not None and target.cluster_id and not me.cluster_id else kind
            add(PeerSpec(name=_peer_name(prefix, ip, port), peer_type=ptype, address=ip, port=port,
                         local_address=local, local_as=my_as, peer_as=_asn(s["asNumber"]), passive=False,
                         hold_time=hold, keepalive_time=keepalive, password=password, graceful_restart=defaults.gr,
                         restart_time=restart if restart is not None else defaults.restart,
                         rr_client=bool(me.cluster_id) and target is not None and not target.cluster_id,
                         peer_node=target.name if target else None, ttl_security=ttl, source=doc, bfd=bfd))
            continue
        peer_sel = compile_selector(s["peerSelector"])
        others = [n for n in sorted(infos.values(), key=lambda n: n.name) if n.name != node_name]
        targets: dict[str, _NodeInfo] = {}
        if selects(me):
            targets.update({n.name: n for n in others if peer_sel(n.labels)})
        if peer_sel(me.labels):  # the reverse side of the same peering
            targets.update({n.name: n for n in others if selects(n)})
        for other in targets.values():
            node_peer(other, kind, prefix, hold=hold, keepalive=keepalive, password=password, source=doc,
                      ttl=ttl, restart=restart, bfd=bfd)

    ordered = tuple(sorted(peers.values(), key=lambda p: (ipaddress.ip_address(p.address).version,
                                                          ipaddress.ip_address(p.address), p.port)))
    return NodeBGPView(node=node_name, router_id=me.v4 or _router_id_from_name(node_name),
                       address_v4=me.v4, address_v6=me.v6, as_number=my_as, listen_port=defaults.listen_port,
                       cluster_id=me.cluster_id, log_severity=defaults.log_severity, peers=ordered,
                       communities=tuple(defaults.communities), errors=tuple(errors))


def _router_id_from_name(name: str) -> str:
    """A stable IPv4-shaped router ID for an IPv6-only node (BGP identifiers are 32 bits)."""
    import hashlib

    h = hashlib.sha1(name.encode()).digest()
    return str(ipaddress.IPv4Address(int.from_bytes(h[:4], "big") | 0x01000000))


# -- ExaBGP rendering -------------------------------------------------------------------------
PROCESS_NAME = "l3net-bridge"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_exabgp_config(view: NodeBGPView, helper_argv: list[str]) -> str:
    """ExaBGP 5 configuration text for ``view``; the API process runs ``helper_argv``.

    ExaBGP has no keepalive setting (it sends keepalives every hold/3), so
    ``keepaliveTime`` is recorded as a comment only. ``manual-eor``: ExaBGP would send
    End-of-RIB as soon as its (empty) configured table is out, before the speaker's
    announcements arrive over the API, and a graceful-restart peer sweeps our routes on
    that EOR; the speaker sends EOR itself after the full table. ``receive { open; }``
    gives the speaker the peer's graceful-restart capability.
    """
    if any(" " in a or ";" in a for a in helper_argv):
        raise ValueError(f"helper argv must not contain spaces or ';': {helper_argv!r}")
    lines = [
        f"# generated by l3net for node {view.node}; do not edit",
        f"process {PROCESS_NAME} {{",
        f"    run {' '.join(helper_argv)};",
        "    encoder json;",
        "}",
    ]
    for p in view.peers:
        lines.append("")
        lines.append(f"neighbor {p.address} {{")
        lines.append(f"    description {_quote(p.name + ' (' + p.peer_type + ')')};")
        lines.append(f"    router-id {view.router_id};")
        lines.append(f"    local-address {p.local_address};")
        lines.append(f"    local-as {p.local_as};")
        lines.append(f"    peer-as {p.peer_as};")
        lines.append(f"    hold-time {p.hold_time};")
        lines.append("    manual-eor true;")
        if p.keepalive_time is not None:
            lines.append(f"    # keepaliveTime {p.keepalive_time}s requested; ExaBGP sends keepalives every hold/3")
        if p.port != BGP_PORT:
            lines.append(f"    connect {p.port};")
        if p.passive:
            lines.append("    passive true;")
        if p.password:
            lines.append(f"    md5-password {_quote(p.password)};")
        if p.ttl_security:
            lines.append(f"    incoming-ttl {p.ttl_security};")
        lines.append("    capability {")
        lines.append("        route-refresh;")
        if p.graceful_restart:
            lines.append(f"        graceful-restart {p.restart_time};")
        lines.append("    }")
        lines.append(f"    family {{ {p.afi} unicast; }}")
        lines.append("    api {")
        lines.append(f"        processes [ {PROCESS_NAME} ];")
        lines.append("        neighbor-changes;")
        lines.append("        receive { parsed; update; open; }")
        lines.append("    }")
        lines.append("}")
    return "\n".join(lines) + "\n"


EXABGP_REACTOR_SPEED = "2.5"   # idle poll of 25 ms


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
        # doing nothing). Commands from the bridge and data on established sessions wake it at once;
        # only a new incoming TCP connection and leftover API work wait up to one poll.
        "exabgp_reactor_speed": EXABGP_REACTOR_SPEED,
    }
