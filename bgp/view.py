"""bgp.view: a node's BGP peer set (:class:`NodeBGPView`) from the datastore's resources.

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
edge); it never adds a partial peering. That includes a single-hop eBGP peer on none of
the node's subnets (unless ``ebgpMultihop``) and a ``secretKeyRef`` password that cannot
be read (``bgp.secrets``). Each peer carries its BGPFilter rules and prefix limit; the
view carries the IPAM facts the import defaults need (``guard``, see ``bgp.policy``).

The checks of a BGPPeer's values live in :mod:`bgp.peer_checks`; ExaBGP's configuration
text is rendered from the view by :mod:`bgp.exabgp_config`.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bgp.peer_checks import check_bgp_peer, resolve_password
from bgp.policy import FilterRule, ImportContext, build_import_context, rules_of
from bgp.secrets import SecretReader
from bgp.selectors import compile_selector
from l3net.constants import BGP_PORT, DEFAULT_AS_NUMBER
from l3net.errors import FieldError
from l3net.model.validate.bfd import BfdSettings, resolve_bfd
from l3net.model.validate.bgp import BGP_CONFIGURATION_SPEC, bgp_configuration_name_check
from l3net.model.validate.checker import Checker
from l3net.model.values import (
    hold_time,
    is_community,
    parse_asn,
    parse_duration,
    parse_peer_ip,
    restart_time,
)

_log = logging.getLogger(__name__)

DEFAULT_HOLD_TIME = 90
DEFAULT_RESTART_TIME = 120

PEER_MESH = "node-to-node mesh"
PEER_GLOBAL = "global"
PEER_NODE = "node specific"
PEER_RR = "route reflector"


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
    password: str | None = field(default=None, repr=False)   # never printed: see bgp.secrets
    graceful_restart: bool = True
    restart_time: int = DEFAULT_RESTART_TIME
    rr_client: bool = False   # this node is a route reflector and the peer is its client
    peer_node: str | None = None
    ttl_security: int = 0
    source: str = ""          # the resource this peering comes from
    multihop: int | None = None                 # ebgpMultihop: outgoing TTL
    max_prefixes: int | None = None             # most prefixes accepted from the peer (None: no limit)
    import_rules: tuple[FilterRule, ...] = ()   # BGPFilter rules of the peer's family, in order
    export_rules: tuple[FilterRule, ...] = ()
    bfd: BfdSettings | None = None  # set only when BFD is enabled for this peer
    # sourceAddress: True (UseNodeIP) binds the session to local_address; False (None) leaves the source of
    # an outgoing connection to the kernel's route lookup (local_address is still where the peer connects to)
    source_node_ip: bool = True
    keep_next_hop: bool = False     # keepOriginalNextHop: routes sent keep their next hop (BIRD: eBGP only)

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
    # What the import defaults need from the cluster (pools, owners); not part of ExaBGP's configuration.
    guard: ImportContext = field(default_factory=ImportContext)

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


# -- node addresses -----------------------------------------------------------------------
def _split_cidr_ip(value: Any) -> str | None:
    """``10.0.0.1/24`` -> ``10.0.0.1``; None for empty/invalid (an IPv6 scope ID is invalid)."""
    if not value or not isinstance(value, str) or "%" in value:
        return None
    try:
        return str(ipaddress.ip_interface(value).ip)
    except ValueError:
        return None


def _subnet(value: Any) -> str | None:
    """``10.0.0.1/24`` -> ``10.0.0.0/24``: the node's subnet; None without a prefix length."""
    if not value or not isinstance(value, str) or "%" in value or "/" not in value:
        return None
    try:
        return str(ipaddress.ip_interface(value).network)
    except ValueError:
        return None


# -- view ----------------------------------------------------------------------------------
@dataclass
class _NodeInfo:
    name: str
    labels: Mapping[str, str]
    v4: str | None
    v6: str | None
    asn: int | None
    cluster_id: str | None
    subnets: tuple[str, ...] = ()


@dataclass(frozen=True)
class IpamFacts:
    """What the import defaults need from IPAM and the workloads (see :mod:`bgp.policy`)."""

    pools: tuple[str, ...] = ()
    block_owner: tuple[tuple[str, str], ...] = ()     # (block, node) of every affinity
    address_owner: tuple[tuple[str, str], ...] = ()   # (address/32 or /128, node) of every workload
    local_workloads: tuple[str, ...] = ()             # this node's workload addresses


# Default prefix limits per peer (BGPConfiguration/BGPPeer ``maxPrefixes`` override them): a cluster
# node sends its blocks and borrowed addresses (a reflector: the cluster's); an external router
# that sends more than this is leaking a table.
DEFAULT_MAX_PREFIXES_EXTERNAL = 10_000
DEFAULT_MAX_PREFIXES_CLUSTER = 100_000


def _node_info(res: Any) -> _NodeInfo:
    b = (res.spec or {}).get("bgp") or {}
    asn: int | None = None
    if b.get("asNumber") not in (None, ""):
        try:
            asn = parse_asn(b["asNumber"])
        except ValueError:
            _log.warning("node has a bad asNumber, using the default node=%s value=%r", res.name, b["asNumber"])
    subnets = tuple(n for n in (_subnet(b.get("ipv4Address")), _subnet(b.get("ipv6Address"))) if n)
    return _NodeInfo(res.name, dict(res.labels or {}), _split_cidr_ip(b.get("ipv4Address")),
                     _split_cidr_ip(b.get("ipv6Address")), asn, b.get("routeReflectorClusterID") or None, subnets)


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
    mesh_password: str | None = field(default=None, repr=False)
    log_severity: str = "Info"
    communities: list[Community] = field(default_factory=list)
    max_prefixes: int | None = None
    bfd_layers: list[Mapping[str, Any]] = field(default_factory=list)  # cluster, then node.<node>


def _bfd_for(layers: list[Mapping[str, Any]], doc: str, errors: list[FieldError]) -> BfdSettings | None:
    """The BFD settings of one peering, or None when BFD is off; bad settings mean no BFD, reported."""
    try:
        settings = resolve_bfd(*layers)
    except ValueError as exc:
        errors.append(FieldError(path="spec.bfd", reason=str(exc), document=doc))
        return None
    return settings if settings.enabled else None


def check_bgp_configuration(name: str, spec: Any, document: str = "") -> list[FieldError]:
    """Every reason a BGPConfiguration cannot be taken as it is: the model's own check and naming rule."""
    if not isinstance(spec, Mapping):
        return [FieldError(path="spec", reason="must be a mapping", document=document)]
    checker = Checker(document)
    out = BGP_CONFIGURATION_SPEC(checker, dict(spec), "spec")
    bgp_configuration_name_check(checker, name, out if isinstance(out, dict) else dict(spec))
    return checker.errors


# A refused item of these lists is left out by its reader; any other refused field is left out whole.
_ITEMWISE = ("communities", "prefixAdvertisements")


def _usable_fields(spec: Mapping[str, Any], problems: list[FieldError]) -> dict[str, Any]:
    """The spec without the fields the model refused (each keeps its earlier value or the default) and
    without nulls, which the model takes as absent."""
    refused = {e.path.removeprefix("spec.").split(".")[0].split("[")[0] for e in problems}
    return {k: v for k, v in spec.items() if v is not None and (k in _ITEMWISE or k not in refused)}


def _read_timers(s: Mapping[str, Any], d: _Defaults, cluster: bool) -> None:
    """The AS number and timers of one checked BGPConfiguration (refused fields already left out)."""
    if cluster and s.get("asNumber") is not None:
        d.asn = parse_asn(s["asNumber"])
    if s.get("holdTime") is not None:
        d.hold = hold_time(s["holdTime"])
    if s.get("keepaliveTime") is not None:
        d.keepalive = int(parse_duration(s["keepaliveTime"]))
    if s.get("restartTime") is not None:
        d.restart = restart_time(s["restartTime"])


def _read_configs(node: str, bgp_configs: Iterable[Any], errors: list[FieldError],
                  secrets: SecretReader | None = None) -> _Defaults:
    """The cluster's settings, then this node's over them; a field the model refuses is reported and skipped,
    so one bad value never takes the mesh down."""
    d = _Defaults()
    by_name = {c.name: c for c in bgp_configs}
    for cfg in (by_name.get("default"), by_name.get(f"node.{node}")):
        if cfg is None:
            continue
        doc = cfg.ref if hasattr(cfg, "ref") else cfg.name
        problems = check_bgp_configuration(cfg.name, cfg.spec or {}, doc)
        errors.extend(problems)
        s = _usable_fields(cfg.spec or {}, problems) if isinstance(cfg.spec or {}, Mapping) else {}
        _read_timers(s, d, cfg.name == "default")
        _read_settings(s, d, cfg.name == "default")
        if s.get("nodeMeshPassword") is not None:
            _read_mesh_password(s["nodeMeshPassword"], d, doc, errors, secrets)
        _read_communities(s, d, problems)
    return d


def _read_settings(s: Mapping[str, Any], d: _Defaults, is_default: bool) -> None:
    if "nodeToNodeMeshEnabled" in s and is_default:
        d.mesh = bool(s["nodeToNodeMeshEnabled"])
    if "listenPort" in s:
        d.listen_port = int(s["listenPort"])
    if "gracefulRestart" in s:
        d.gr = bool(s["gracefulRestart"])
    if "maxPrefixes" in s:
        d.max_prefixes = int(s["maxPrefixes"])
    if "logSeverityScreen" in s:
        d.log_severity = str(s["logSeverityScreen"])
    if isinstance(s.get("bfd"), Mapping):
        d.bfd_layers.append(s["bfd"])


def _read_mesh_password(value: Any, d: _Defaults, doc: str, errors: list[FieldError],
                        secrets: SecretReader | None) -> None:
    try:
        d.mesh_password = resolve_password(value, secrets)
    except ValueError as exc:
        # the mesh stays without a password rather than down: its peers refuse it until fixed
        errors.append(FieldError(path="spec.nodeMeshPassword", reason=str(exc), document=doc))


def _read_communities(s: Mapping[str, Any], d: _Defaults, problems: list[FieldError]) -> None:
    """The communities of the prefix advertisements, leaving out every item the model refused (reported)."""
    def refused(field: str, i: int) -> bool:
        item = f"spec.{field}[{i}]"
        return any(e.path == item or e.path.startswith((f"{item}.cidr", f"{item}.name", f"{item}.value"))
                   or e.path == f"spec.{field}" for e in problems)

    named = {c.get("name"): c.get("value") for i, c in enumerate(s.get("communities") or [])
             if isinstance(c, Mapping) and not refused("communities", i)}
    for i, adv in enumerate(s.get("prefixAdvertisements") or []):
        if not isinstance(adv, Mapping) or refused("prefixAdvertisements", i):
            continue
        refs = adv.get("communities")
        for ref in refs if isinstance(refs, list) else []:
            value = named.get(ref, ref) if isinstance(ref, str) else None
            if is_community(value):
                d.communities.append(Community(str(adv["cidr"]), value))


def build_node_view(node_name: str, nodes: Iterable[Any], bgp_configs: Iterable[Any],
                    bgp_peers: Iterable[Any], bgp_filters: Iterable[Any] = (), *,
                    secrets: SecretReader | None = None, ipam: IpamFacts | None = None) -> NodeBGPView:
    """The BGP peer set of ``node_name`` (Resources in, a frozen view out; pure but for reading
    ``secretKeyRef`` files through ``secrets``)."""
    errors: list[FieldError] = []
    infos = {n.name: _node_info(n) for n in nodes}
    defaults = _read_configs(node_name, bgp_configs, errors, secrets)
    me = infos.get(node_name)
    if me is None or (me.v4 is None and me.v6 is None):
        return NodeBGPView(node=node_name, router_id=None, address_v4=None, address_v6=None,
                           as_number=defaults.asn, errors=tuple(errors))
    ipam = ipam or IpamFacts()
    guard = build_import_context(
        pools=ipam.pools, block_owner=ipam.block_owner, address_owner=ipam.address_owner,
        node_addresses=[(ip, n.name) for n in infos.values() for ip in (n.v4, n.v6) if ip],
        node_as=[(n.name, n.asn or defaults.asn) for n in infos.values()], local_workloads=ipam.local_workloads)
    b = _ViewBuilder(me, infos, defaults, {f.name: (f.spec or {}) for f in bgp_filters}, errors, secrets)
    # 1. full mesh (route reflectors stay out of it, on both sides)
    b.mesh()
    # 2. explicit BGPPeers
    for res in sorted(bgp_peers, key=lambda r: r.name):
        b.bgp_peer(res)
    ordered = tuple(sorted(b.peers.values(), key=lambda p: (ipaddress.ip_address(p.address).version,
                                                            ipaddress.ip_address(p.address), p.port)))
    return NodeBGPView(node=node_name, router_id=me.v4 or _router_id_from_name(node_name),
                       address_v4=me.v4, address_v6=me.v6, as_number=b.my_as, listen_port=defaults.listen_port,
                       cluster_id=me.cluster_id, log_severity=defaults.log_severity, peers=ordered,
                       communities=tuple(defaults.communities), errors=tuple(errors), guard=guard)


_RANK = {PEER_MESH: 0, PEER_GLOBAL: 1, PEER_NODE: 2, PEER_RR: 2}


@dataclass
class _PeerSettings:
    """What one BGPPeer (or the mesh) sets for each session it makes."""

    hold: int
    keepalive: int | None
    password: str | None
    source: str
    ttl: int = 0
    restart: int | None = None
    max_prefixes: Any = None
    names: tuple[str, ...] = ()
    bfd: BfdSettings | None = None
    source_node_ip: bool = True
    keep_next_hop: bool = False


class _ViewBuilder:
    """The peers of one node, added from the mesh and each BGPPeer (a more specific kind wins)."""

    def __init__(self, me: _NodeInfo, infos: Mapping[str, _NodeInfo], defaults: _Defaults,
                 filters: Mapping[str, Any], errors: list[FieldError], secrets: SecretReader | None) -> None:
        self.me, self.infos, self.defaults, self.filters = me, infos, defaults, filters
        self.errors, self.secrets = errors, secrets
        self.my_as = me.asn or defaults.asn
        self.peers: dict[tuple[str, int], PeerSpec] = {}

    def limit(self, explicit: Any, cluster: bool) -> int:
        if explicit is not None:
            return int(explicit)
        if self.defaults.max_prefixes is not None:
            return self.defaults.max_prefixes
        return DEFAULT_MAX_PREFIXES_CLUSTER if cluster else DEFAULT_MAX_PREFIXES_EXTERNAL

    def local_for(self, ip: str) -> str | None:
        return self.me.v6 if ":" in ip else self.me.v4

    def add(self, spec: PeerSpec) -> None:
        key = (spec.address, spec.port)
        if spec.address in (self.me.v4, self.me.v6):
            return
        old = self.peers.get(key)
        if old is None or _RANK[spec.peer_type] > _RANK[old.peer_type]:
            self.peers[key] = spec

    def peer_rules(self, names: tuple[str, ...], ip: str, source: str) -> dict[str, tuple[FilterRule, ...]]:
        version = 6 if ":" in ip else 4
        imp, errs = rules_of(self.filters, names, "import", version, source)
        exp, _ = rules_of(self.filters, names, "export", version, source)
        for e in errs:
            if e not in self.errors:
                self.errors.append(e)
        return {"import_rules": imp, "export_rules": exp}

    def node_peer(self, other: _NodeInfo, kind: str, prefix: str, ps: _PeerSettings) -> None:
        me, d = self.me, self.defaults
        for ip in (other.v4, other.v6):
            local = self.local_for(ip) if ip is not None else None
            if ip is None or local is None:
                continue
            peer_type = PEER_RR if (other.cluster_id and not me.cluster_id) else kind
            self.add(PeerSpec(
                name=_peer_name(prefix, ip, BGP_PORT), peer_type=peer_type, address=ip,
                port=d.listen_port, local_address=local, local_as=self.my_as,
                peer_as=other.asn or d.asn,
                # both sides run l3net: the higher address waits for the lower one to connect
                passive=ipaddress.ip_address(local) > ipaddress.ip_address(ip),
                hold_time=ps.hold, keepalive_time=ps.keepalive, password=ps.password, graceful_restart=d.gr,
                restart_time=ps.restart if ps.restart is not None else d.restart,
                rr_client=bool(me.cluster_id) and not other.cluster_id, peer_node=other.name,
                ttl_security=ps.ttl, source=ps.source, max_prefixes=self.limit(ps.max_prefixes, True), bfd=ps.bfd,
                source_node_ip=ps.source_node_ip, keep_next_hop=ps.keep_next_hop,
                **self.peer_rules(ps.names, ip, ps.source)))

    def mesh(self) -> None:
        d = self.defaults
        mesh_bfd = _bfd_for(d.bfd_layers, "BGPConfiguration/default", self.errors)
        if not d.mesh or self.me.cluster_id:
            return
        ps = _PeerSettings(d.hold, d.keepalive, d.mesh_password, "node-to-node mesh", bfd=mesh_bfd)
        for other in sorted(self.infos.values(), key=lambda n: n.name):
            if other.name != self.me.name and not other.cluster_id:
                self.node_peer(other, PEER_MESH, "Mesh", ps)

    def bgp_peer(self, res: Any) -> None:
        s = res.spec or {}
        doc = res.ref if hasattr(res, "ref") else res.name
        problems = check_bgp_peer(s, doc)
        self.errors.extend(problems)
        if any(not e.path.startswith("spec.bfd") for e in problems):
            _log.warning("BGPPeer refused peer=%s reasons=%s", res.name, "; ".join(str(p) for p in problems))
            return
        if problems:
            # Only its BFD settings are wrong: the peering runs without BFD rather than not at all.
            _log.warning("BGPPeer runs without BFD peer=%s reasons=%s", res.name, "; ".join(str(p) for p in problems))
            s = {k: v for k, v in s.items() if k != "bfd"}
        is_global = not s.get("node") and not s.get("nodeSelector")
        kind, prefix = (PEER_GLOBAL, "Global") if is_global else (PEER_NODE, "Node")
        if s.get("peerIP") and not _selects(s, self.me):
            return
        try:
            password = resolve_password(s.get("password"), self.secrets)
        except ValueError as exc:
            self.errors.append(FieldError(path="spec.password", reason=str(exc), document=doc))
            _log.warning("BGPPeer refused peer=%s reason=%s", res.name, exc)
            return
        d = self.defaults
        ps = _PeerSettings(
            hold=hold_time(s["holdTime"]) if s.get("holdTime") else d.hold,
            keepalive=int(parse_duration(s["keepaliveTime"])) if s.get("keepaliveTime") else d.keepalive,
            password=password, source=doc, ttl=int(s.get("ttlSecurity") or 0),
            restart=restart_time(s["maxRestartTime"]) if s.get("maxRestartTime") else None,
            max_prefixes=s.get("maxPrefixes"), names=tuple(s.get("filters") or ()),
            bfd=_bfd_for([*d.bfd_layers, s.get("bfd") or {}], doc, self.errors),
            source_node_ip=s.get("sourceAddress") != "None", keep_next_hop=s.get("keepOriginalNextHop") is True)
        if s.get("peerIP"):
            self.ip_peer(res.name, s, kind, prefix, ps)
        else:
            self.selector_peers(s, kind, prefix, ps)

    def ip_peer(self, name: str, s: Mapping[str, Any], kind: str, prefix: str, ps: _PeerSettings) -> None:
        me, d = self.me, self.defaults
        ip, given_port = parse_peer_ip(s["peerIP"])
        port = given_port or BGP_PORT
        local = self.local_for(ip)
        if local is None:
            return
        target = next((n for n in self.infos.values() if ip in (n.v4, n.v6)), None)
        peer_as = parse_asn(s["asNumber"])
        multihop = s.get("ebgpMultihop")
        # A routed eBGP peer needs ebgpMultihop, or GTSM (ttlSecurity N > 1 hops: ExaBGP then sends TTL 255).
        routed_ok = bool(multihop and multihop > 1) or bool(ps.ttl and ps.ttl > 1)
        if peer_as != self.my_as and _off_subnet(ip, me.subnets) and not routed_ok:
            reason = (f"single-hop eBGP peer {ip} is on none of node {me.name}'s subnets "
                      f"({', '.join(me.subnets)}): set ebgpMultihop (2..255) or ttlSecurity (hops) if it is routed")
            self.errors.append(FieldError(path="spec.peerIP", reason=reason, document=ps.source))
            _log.warning("BGPPeer refused peer=%s node=%s reason=%s", name, me.name, reason)
            return
        ptype = PEER_RR if target is not None and target.cluster_id and not me.cluster_id else kind
        self.add(PeerSpec(name=_peer_name(prefix, ip, port), peer_type=ptype, address=ip, port=port,
                          local_address=local, local_as=self.my_as, peer_as=peer_as, passive=False,
                          hold_time=ps.hold, keepalive_time=ps.keepalive, password=ps.password,
                          graceful_restart=d.gr, restart_time=ps.restart if ps.restart is not None else d.restart,
                          rr_client=bool(me.cluster_id) and target is not None and not target.cluster_id,
                          peer_node=target.name if target else None, ttl_security=ps.ttl, source=ps.source,
                          multihop=int(multihop) if multihop and peer_as != self.my_as else None,
                          max_prefixes=self.limit(ps.max_prefixes, target is not None), bfd=ps.bfd,
                          source_node_ip=ps.source_node_ip, keep_next_hop=ps.keep_next_hop,
                          **self.peer_rules(ps.names, ip, ps.source)))

    def selector_peers(self, s: Mapping[str, Any], kind: str, prefix: str, ps: _PeerSettings) -> None:
        me = self.me
        peer_sel = compile_selector(s["peerSelector"])
        others = [n for n in sorted(self.infos.values(), key=lambda n: n.name) if n.name != me.name]
        targets: dict[str, _NodeInfo] = {}
        if _selects(s, me):
            targets.update({n.name: n for n in others if peer_sel(n.labels)})
        if peer_sel(me.labels):  # the reverse side of the same peering
            targets.update({n.name: n for n in others if _selects(s, n)})
        for other in targets.values():
            self.node_peer(other, kind, prefix, ps)


def _selects(s: Mapping[str, Any], n: _NodeInfo) -> bool:
    """The BGPPeer's node side (global, ``node`` or ``nodeSelector``) includes ``n``."""
    if not s.get("node") and not s.get("nodeSelector"):
        return True
    if s.get("node"):
        return bool(n.name == s["node"])
    return bool(compile_selector(s["nodeSelector"])(n.labels))


def _off_subnet(ip: str, subnets: tuple[str, ...]) -> bool:
    """True when the node's subnets are known and ``ip`` is on none of them."""
    addr = ipaddress.ip_address(ip)
    nets = [ipaddress.ip_network(n) for n in subnets]
    known = [n for n in nets if n.version == addr.version and n.prefixlen < n.max_prefixlen]
    return bool(known) and not any(addr in n for n in known)


def _router_id_from_name(name: str) -> str:
    """A stable IPv4-shaped router ID for an IPv6-only node (BGP identifiers are 32 bits)."""
    import hashlib

    h = hashlib.sha1(name.encode()).digest()
    return str(ipaddress.IPv4Address(int.from_bytes(h[:4], "big") | 0x01000000))
