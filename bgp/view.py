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

The view reads the model's typed specs (:mod:`l3net.model.bgp_specs`, and
:mod:`l3net.model.bgpfilter_spec` for BGPFilters), never the raw documents: every value was parsed
once, by the model. ``nodeSelector``/``peerSelector`` are compiled by the model's one selector
compiler (:func:`l3net.model.selectors.parse_calico`): absent or empty selects every node, an
expression that does not parse is logged and selects none (fail closed). What it still refuses
depends on the cluster or the node, not on one document, and ``NodeBGPView.errors`` names the field
and reason: a single-hop eBGP peer on none of the node's subnets (unless ``ebgpMultihop`` or
``ttlSecurity``), a ``secretKeyRef`` password that cannot be read here (``bgp.secrets``; the peer is
refused, the mesh runs without a password) and a BGPFilter that is not there (``bgp.policy``). A
refused BGPPeer never adds a partial peering.

A Resource the model did not validate (built by hand) is checked with the model's rules at
this edge (``bgp_specs.checked``, ``bgpfilter_spec``): its errors join ``NodeBGPView.errors``;
a BGPPeer with any refused field is refused, except one refused only in its ``bfd``, which
runs without BFD; a BGPConfiguration's or Node's refused field is left out (the earlier value
or the default applies); a BGPFilter is refused whole (leaving out a refused rule would pass
what it rejects), and the peers that name it reject every route until it is fixed.

Each peer carries its BGPFilter rules and prefix limit; the view carries the IPAM facts the
import defaults need (``guard``, see ``bgp.policy``). ExaBGP's configuration text is rendered
from the view by :mod:`bgp.exabgp_config`.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bgp.policy import FilterRule, ImportContext, build_import_context, rules_of
from bgp.secrets import SecretReader, resolve_password
from l3net.constants import BGP_PORT, DEFAULT_AS_NUMBER
from l3net.errors import FieldError, ValidationError
from l3net.model.bgp_specs import BfdLayer, BGPConfigurationSpec, BGPPeerSpec, NodeBGP, Password, bfd_settings, checked
from l3net.model.bgpfilter_spec import BGPFilterSpec, bgpfilter_spec
from l3net.model.resource import Resource
from l3net.model.selectors import parse_calico
from l3net.model.validate.bfd import BfdSettings

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
    # (block, node) of every confirmed affinity: a set of canonical text as the model keeps it
    # (felix.calc.Model.block_owners), or pairs to re-serialise (see build_import_context)
    block_owner: frozenset[tuple[str, str]] | tuple[tuple[str, str], ...] = frozenset()
    # canonical text, as the model holds them (felix.calc.Model.address_owners): see build_import_context
    address_owner: frozenset[tuple[str, str]] = frozenset()   # (address/32 or /128, node) of every workload
    local_workloads: frozenset[str] = frozenset()             # this node's workload addresses


# Default prefix limits per peer (BGPConfiguration/BGPPeer ``maxPrefixes`` override them): a cluster
# node sends its blocks and borrowed addresses (a reflector: the cluster's); an external router
# that sends more than this is leaking a table.
DEFAULT_MAX_PREFIXES_EXTERNAL = 10_000
DEFAULT_MAX_PREFIXES_CLUSTER = 100_000


def _node_info(res: Resource) -> _NodeInfo:
    got = checked(res, NodeBGP)
    if got.errors:   # a Node the model did not validate: its refused fields are left out (not the view's errors)
        _log.warning("node fields refused, left out node=%s reasons=%s", res.name, "; ".join(map(str, got.errors)))
    b = got.spec
    subnets = tuple(n for n in (b.ipv4_network, b.ipv6_network) if n)
    return _NodeInfo(res.name, dict(res.labels or {}), b.ipv4_address, b.ipv6_address, b.as_number,
                     b.route_reflector_cluster_id, subnets)


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
    bfd_layers: list[BfdLayer] = field(default_factory=list)  # cluster, then node.<node>


def _bfd_for(layers: Iterable[BfdLayer | None]) -> BfdSettings | None:
    """The BFD settings of one peering, or None when BFD is off."""
    settings = bfd_settings(*layers)
    return settings if settings.enabled else None


def _read_timers(s: BGPConfigurationSpec, d: _Defaults, cluster: bool) -> None:
    """The AS number (the cluster's configuration only) and timers of one BGPConfiguration."""
    if cluster and s.as_number is not None:
        d.asn = s.as_number
    if s.hold_time is not None:
        d.hold = s.hold_time
    if s.keepalive_time is not None:
        d.keepalive = int(s.keepalive_time)
    if s.restart_time is not None:
        d.restart = s.restart_time


def _read_configs(node: str, bgp_configs: Iterable[Resource], errors: list[FieldError],
                  secrets: SecretReader | None = None) -> _Defaults:
    """The cluster's settings, then this node's over them. A configuration the model did not validate has its
    refused fields reported and left out, so one bad value never takes the mesh down."""
    d = _Defaults()
    by_name = {c.name: c for c in bgp_configs}
    for cfg in (by_name.get("default"), by_name.get(f"node.{node}")):
        if cfg is None:
            continue
        got = checked(cfg, BGPConfigurationSpec)
        errors.extend(got.errors)
        s = got.spec
        _read_timers(s, d, cfg.name == "default")
        _read_settings(s, d, cfg.name == "default")
        if s.node_mesh_password is not None:
            _read_mesh_password(s.node_mesh_password, d, cfg.ref, errors, secrets)
        d.communities.extend(Community(adv.cidr, value) for adv in s.prefix_advertisements
                             for value in adv.communities)
    return d


def _read_settings(s: BGPConfigurationSpec, d: _Defaults, is_default: bool) -> None:
    if s.node_to_node_mesh_enabled is not None and is_default:
        d.mesh = s.node_to_node_mesh_enabled
    if s.listen_port is not None:
        d.listen_port = s.listen_port
    if s.graceful_restart is not None:
        d.gr = s.graceful_restart
    if s.max_prefixes is not None:
        d.max_prefixes = s.max_prefixes
    if s.log_severity_screen is not None:
        d.log_severity = s.log_severity_screen
    if s.bfd is not None:
        d.bfd_layers.append(s.bfd)


def _read_mesh_password(value: Password, d: _Defaults, doc: str, errors: list[FieldError],
                        secrets: SecretReader | None) -> None:
    try:
        d.mesh_password = resolve_password(value, secrets)
    except ValueError as exc:
        # the mesh stays without a password rather than down: its peers refuse it until fixed
        errors.append(FieldError(path="spec.nodeMeshPassword", reason=str(exc), document=doc))


def _filters(bgp_filters: Iterable[Resource], errors: list[FieldError]) -> dict[str, BGPFilterSpec | None]:
    """Each BGPFilter's typed spec by name; None for one the model refuses (built by hand), whose peers then
    reject every route (``bgp.policy``): leaving out only its refused rules would let through what they reject."""
    out: dict[str, BGPFilterSpec | None] = {}
    for res in bgp_filters:
        try:
            out[res.name] = bgpfilter_spec(res)
        except ValidationError as exc:
            errors.extend(exc.errors)
            _log.warning("BGPFilter refused filter=%s reasons=%s", res.name, exc)
            out[res.name] = None
    return out


# The last import context built, with what it was built from: the IPAM facts by identity (a caller that
# has not seen the cluster's workloads, blocks or pools change hands the same object again, see
# felix.main.bgp_builder), the nodes' addresses and ASNs by value (a few per node).
_LAST_CONTEXT: list[tuple[IpamFacts, tuple[Any, ...], tuple[Any, ...], ImportContext]] = []


def _import_context(ipam: IpamFacts, node_addresses: tuple[tuple[str, str], ...],
                    node_as: tuple[tuple[str, int], ...]) -> ImportContext:
    """build_import_context, re-sorted only when its inputs changed: it sorts every workload address of the
    cluster, and the agent builds the view on every apply."""
    if _LAST_CONTEXT:
        last_ipam, last_addresses, last_as, context = _LAST_CONTEXT[0]
        if last_ipam is ipam and last_addresses == node_addresses and last_as == node_as:
            return context
    context = build_import_context(pools=ipam.pools, block_owner=ipam.block_owner,
                                   address_owner=ipam.address_owner, node_addresses=node_addresses,
                                   node_as=node_as, local_workloads=ipam.local_workloads)
    _LAST_CONTEXT[:] = [(ipam, node_addresses, node_as, context)]
    return context


def build_node_view(node_name: str, nodes: Iterable[Resource], bgp_configs: Iterable[Resource],
                    bgp_peers: Iterable[Resource], bgp_filters: Iterable[Resource] = (), *,
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
    guard = _import_context(ipam or IpamFacts(),
                            tuple((ip, n.name) for n in infos.values() for ip in (n.v4, n.v6) if ip),
                            tuple((n.name, n.asn or defaults.asn) for n in infos.values()))
    b = _ViewBuilder(me, infos, defaults, _filters(bgp_filters, errors), errors, secrets)
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
    max_prefixes: int | None = None
    names: tuple[str, ...] = ()
    bfd: BfdSettings | None = None
    source_node_ip: bool = True
    keep_next_hop: bool = False


class _ViewBuilder:
    """The peers of one node, added from the mesh and each BGPPeer (a more specific kind wins)."""

    def __init__(self, me: _NodeInfo, infos: Mapping[str, _NodeInfo], defaults: _Defaults,
                 filters: Mapping[str, BGPFilterSpec | None], errors: list[FieldError],
                 secrets: SecretReader | None) -> None:
        self.me, self.infos, self.defaults, self.filters = me, infos, defaults, filters
        self.errors, self.secrets = errors, secrets
        self.my_as = me.asn or defaults.asn
        self.peers: dict[tuple[str, int], PeerSpec] = {}

    def limit(self, explicit: int | None, cluster: bool) -> int:
        if explicit is not None:
            return explicit
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
        mesh_bfd = _bfd_for(d.bfd_layers)
        if not d.mesh or self.me.cluster_id:
            return
        ps = _PeerSettings(d.hold, d.keepalive, d.mesh_password, "node-to-node mesh", bfd=mesh_bfd)
        for other in sorted(self.infos.values(), key=lambda n: n.name):
            if other.name != self.me.name and not other.cluster_id:
                self.node_peer(other, PEER_MESH, "Mesh", ps)

    def bgp_peer(self, res: Resource) -> None:
        got = checked(res, BGPPeerSpec)
        s, doc = got.spec, res.ref
        self.errors.extend(got.errors)   # only for a BGPPeer the model did not validate
        if any(not e.path.startswith("spec.bfd") for e in got.errors):
            _log.warning("BGPPeer refused peer=%s reasons=%s", res.name, "; ".join(str(p) for p in got.errors))
            return
        if got.errors:
            # Only its BFD settings were refused (and left out of the spec): the peering runs without BFD
            # rather than not at all.
            _log.warning("BGPPeer runs without BFD peer=%s reasons=%s", res.name,
                         "; ".join(str(p) for p in got.errors))
        is_global = not s.node and not s.node_selector
        kind, prefix = (PEER_GLOBAL, "Global") if is_global else (PEER_NODE, "Node")
        if s.peer_ip is not None and not _selects(s, self.me):
            return
        try:
            password = resolve_password(s.password, self.secrets)
        except ValueError as exc:
            self.errors.append(FieldError(path="spec.password", reason=str(exc), document=doc))
            _log.warning("BGPPeer refused peer=%s reason=%s", res.name, exc)
            return
        d = self.defaults
        ps = _PeerSettings(
            hold=s.hold_time if s.hold_time is not None else d.hold,
            keepalive=int(s.keepalive_time) if s.keepalive_time is not None else d.keepalive,
            password=password, source=doc, ttl=s.ttl_security or 0, restart=s.max_restart_time,
            max_prefixes=s.max_prefixes, names=s.filters, bfd=_bfd_for([*d.bfd_layers, s.bfd]),
            source_node_ip=s.source_address != "None", keep_next_hop=s.keep_original_next_hop is True)
        if s.peer_ip is not None:
            self.ip_peer(res.name, s, s.peer_ip, kind, prefix, ps)
        else:
            self.selector_peers(s, kind, prefix, ps)

    def ip_peer(self, name: str, s: BGPPeerSpec, ip: str, kind: str, prefix: str, ps: _PeerSettings) -> None:
        me, d = self.me, self.defaults
        port = s.peer_port or BGP_PORT
        local = self.local_for(ip)
        if local is None:
            return
        target = next((n for n in self.infos.values() if ip in (n.v4, n.v6)), None)
        peer_as = s.as_number
        assert peer_as is not None, "the model requires asNumber with peerIP"
        multihop = s.ebgp_multihop
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
                          multihop=multihop if multihop and peer_as != self.my_as else None,
                          max_prefixes=self.limit(ps.max_prefixes, target is not None), bfd=ps.bfd,
                          source_node_ip=ps.source_node_ip, keep_next_hop=ps.keep_next_hop,
                          **self.peer_rules(ps.names, ip, ps.source)))

    def selector_peers(self, s: BGPPeerSpec, kind: str, prefix: str, ps: _PeerSettings) -> None:
        me = self.me
        peer_sel = parse_calico(s.peer_selector, where="BGPPeer spec.peerSelector").matches
        others = [n for n in sorted(self.infos.values(), key=lambda n: n.name) if n.name != me.name]
        targets: dict[str, _NodeInfo] = {}
        if _selects(s, me):
            targets.update({n.name: n for n in others if peer_sel(n.labels)})
        if peer_sel(me.labels):  # the reverse side of the same peering
            targets.update({n.name: n for n in others if _selects(s, n)})
        for other in targets.values():
            self.node_peer(other, kind, prefix, ps)


def _selects(s: BGPPeerSpec, n: _NodeInfo) -> bool:
    """The BGPPeer's node side (global, ``node`` or ``nodeSelector``) includes ``n``."""
    if not s.node and not s.node_selector:
        return True
    if s.node:
        return n.name == s.node
    return parse_calico(s.node_selector, where="BGPPeer spec.nodeSelector").matches(n.labels)


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
