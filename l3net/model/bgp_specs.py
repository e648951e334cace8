"""l3net.model.bgp_specs: the typed, normalised specs of the BGP kinds (Node's ``spec.bgp``, BGPConfiguration,
BGPPeer), so that no reader parses their raw documents again.

The model validates a document once (:mod:`l3net.model.validation`); this module turns the validated spec
into frozen values, every field parsed by the one parser of its kind (:mod:`l3net.model.values`): AS numbers
as integers, durations as seconds (``hold_time``/``restart_time`` whole seconds, keepalive float), addresses
re-serialised (``str(ipaddress...)``), ``peerIP`` split into address and port, community names resolved to
their values; selectors stay text (compiled where they are used, fail closed); an absent field is None
(an absent list is ``()``).

Cheap to call repeatedly: the typed spec of a Resource object is computed once and kept on that object
(the agent rebuilds its BGP view on every apply from the same Resource objects).

The edge: a Resource that the model's validation did not produce (``Resource.validated`` is false: built by
hand, by a test or a tool) is checked here with the model's own rules first, never trusted and never
re-parsed with another grammar. :func:`checked` returns its typed spec with every refused part left out
(a refused field is absent; a refused item of ``communities``/``prefixAdvertisements`` is left out of its
list) together with the model's FieldErrors; the strict readers
(:func:`typed_spec` and one per kind) raise :class:`~l3net.errors.ValidationError` instead.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from l3net.errors import FieldError, ValidationError
from l3net.model.resource import Resource
from l3net.model.validate.bfd import BfdSettings
from l3net.model.validate.checker import Checker, format_path
from l3net.model.validate.kinds import NAME_CHECKS, SPECS
from l3net.model.values import hold_time, parse_asn, parse_duration, parse_peer_ip, restart_time

_log = logging.getLogger(__name__)

__all__ = ["SPEC_TYPES", "BGPConfigurationSpec", "BGPPeerSpec", "BGPSpec", "BfdLayer", "Checked", "NamedCommunity",
           "NodeBGP", "Password", "PrefixAdvertisement", "SecretKeyRef", "bfd_settings", "bgp_configuration_spec",
           "bgp_peer_spec", "checked", "node_bgp", "typed_spec"]


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    """A password kept in a Kubernetes Secret: ``<secrets dir>/<name>/<key>`` (read by ``bgp.secrets``)."""

    name: str
    key: str


@dataclass(frozen=True, slots=True)
class Password:
    """An MD5 password: exactly one of ``value`` (never in a repr) and ``secret_key_ref``."""

    value: str | None = field(default=None, repr=False)
    secret_key_ref: SecretKeyRef | None = None


@dataclass(frozen=True, slots=True)
class NamedCommunity:
    """One entry of BGPConfiguration ``communities``: a name for a community value (``aa:nn`` or ``aa:nn:mm``)."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class PrefixAdvertisement:
    """One entry of ``prefixAdvertisements``: the community values (names resolved) attached within ``cidr``."""

    cidr: str                       # the network, re-serialised
    communities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BfdLayer:
    """One ``bfd`` block as written (None: not set here, a lower layer or the default applies); intervals in µs."""

    enabled: bool | None = None
    min_rx_us: int | None = None
    min_tx_us: int | None = None
    multiplier: int | None = None


@dataclass(frozen=True, slots=True)
class NodeBGP:
    """A Node's ``spec.bgp``. Each address re-serialised, with its subnet (None when written without a prefix
    length); the cluster ID makes the node a route reflector."""

    ipv4_address: str | None = None
    ipv4_network: str | None = None
    ipv6_address: str | None = None
    ipv6_network: str | None = None
    as_number: int | None = None
    route_reflector_cluster_id: str | None = None


@dataclass(frozen=True, slots=True)
class BGPConfigurationSpec:
    """A BGPConfiguration's spec (the ``default`` one or a ``node.<node>`` one); durations in seconds."""

    node_to_node_mesh_enabled: bool | None = None
    as_number: int | None = None
    listen_port: int | None = None
    log_severity_screen: str | None = None
    keepalive_time: float | None = None
    hold_time: int | None = None
    graceful_restart: bool | None = None
    restart_time: int | None = None
    node_mesh_password: Password | None = None
    communities: tuple[NamedCommunity, ...] = ()
    prefix_advertisements: tuple[PrefixAdvertisement, ...] = ()
    service_cluster_ips: tuple[str, ...] = ()       # networks, re-serialised
    service_external_ips: tuple[str, ...] = ()
    service_load_balancer_ips: tuple[str, ...] = ()
    max_prefixes: int | None = None
    bfd: BfdLayer | None = None


@dataclass(frozen=True, slots=True)
class BGPPeerSpec:
    """A BGPPeer's spec: ``peer_ip`` (re-serialised, ``peer_port`` None when not written) with ``as_number``, or
    ``peer_selector``; global, or for ``node`` or ``node_selector``; durations in seconds."""

    node: str | None = None
    node_selector: str | None = None
    peer_ip: str | None = None
    peer_port: int | None = None
    peer_selector: str | None = None
    as_number: int | None = None
    keepalive_time: float | None = None
    hold_time: int | None = None
    password: Password | None = None
    source_address: str | None = None       # "UseNodeIP" | "None"
    keep_original_next_hop: bool | None = None
    max_restart_time: int | None = None
    ttl_security: int | None = None
    ebgp_multihop: int | None = None
    max_prefixes: int | None = None
    filters: tuple[str, ...] = ()           # BGPFilter names, in order
    bfd: BfdLayer | None = None


BGPSpec = NodeBGP | BGPConfigurationSpec | BGPPeerSpec
S = TypeVar("S", NodeBGP, BGPConfigurationSpec, BGPPeerSpec)


@dataclass(frozen=True, slots=True)
class Checked(Generic[S]):
    """A typed spec and the model's reasons for what it left out (none for a Resource the model validated)."""

    spec: S
    errors: tuple[FieldError, ...] = ()


# -- conversion of a validated spec -------------------------------------------------------------------
def _opt(value: Any, parse: Callable[[Any], Any]) -> Any:
    return None if value is None else parse(value)


def _interface(value: str | None) -> tuple[str | None, str | None]:
    """``10.0.0.11/24`` -> (``10.0.0.11``, ``10.0.0.0/24``); the subnet is None when no prefix length is written."""
    if value is None:
        return None, None
    iface = ipaddress.ip_interface(value)
    return str(iface.ip), (str(iface.network) if "/" in value else None)


def _network(value: str) -> str:
    return str(ipaddress.ip_network(value))


def _password(value: Mapping[str, Any]) -> Password:
    ref = value.get("secretKeyRef")
    if ref is not None:
        return Password(secret_key_ref=SecretKeyRef(ref["name"], ref["key"]))
    return Password(value=value["value"])


def _bfd(value: Mapping[str, Any]) -> BfdLayer:
    def micros(text: Any) -> int:
        return round(parse_duration(text) * 1e6)   # as BFD carries intervals (and resolve_bfd rounds)

    return BfdLayer(value.get("enabled"), _opt(value.get("minRxInterval"), micros),
                    _opt(value.get("minTxInterval"), micros), value.get("multiplier"))


def _node(spec: Mapping[str, Any]) -> NodeBGP:
    b = spec.get("bgp") or {}
    v4, net4 = _interface(b.get("ipv4Address"))
    v6, net6 = _interface(b.get("ipv6Address"))
    cluster = b.get("routeReflectorClusterID")
    return NodeBGP(v4, net4, v6, net6, _opt(b.get("asNumber"), parse_asn),
                   None if cluster is None else str(ipaddress.ip_address(cluster)))


def _networks(items: Any) -> tuple[str, ...]:
    return tuple(_network(item["cidr"]) for item in items or ())


def _configuration(s: Mapping[str, Any]) -> BGPConfigurationSpec:
    named = tuple(NamedCommunity(c["name"], c["value"]) for c in s.get("communities") or ())
    by_name = {c.name: c.value for c in named}   # a repeated name: the last one wins
    advertisements = tuple(
        PrefixAdvertisement(_network(a["cidr"]), tuple(by_name.get(ref, ref) for ref in a.get("communities") or ()))
        for a in s.get("prefixAdvertisements") or ())
    return BGPConfigurationSpec(
        node_to_node_mesh_enabled=s.get("nodeToNodeMeshEnabled"), as_number=_opt(s.get("asNumber"), parse_asn),
        listen_port=s.get("listenPort"), log_severity_screen=s.get("logSeverityScreen"),
        keepalive_time=_opt(s.get("keepaliveTime"), parse_duration), hold_time=_opt(s.get("holdTime"), hold_time),
        graceful_restart=s.get("gracefulRestart"), restart_time=_opt(s.get("restartTime"), restart_time),
        node_mesh_password=_opt(s.get("nodeMeshPassword"), _password), communities=named,
        prefix_advertisements=advertisements, service_cluster_ips=_networks(s.get("serviceClusterIPs")),
        service_external_ips=_networks(s.get("serviceExternalIPs")),
        service_load_balancer_ips=_networks(s.get("serviceLoadBalancerIPs")),
        max_prefixes=s.get("maxPrefixes"), bfd=_opt(s.get("bfd"), _bfd))


def _peer(s: Mapping[str, Any]) -> BGPPeerSpec:
    ip, port = parse_peer_ip(s["peerIP"]) if s.get("peerIP") is not None else (None, None)
    return BGPPeerSpec(
        node=s.get("node"), node_selector=s.get("nodeSelector"), peer_ip=ip, peer_port=port,
        peer_selector=s.get("peerSelector"), as_number=_opt(s.get("asNumber"), parse_asn),
        keepalive_time=_opt(s.get("keepaliveTime"), parse_duration), hold_time=_opt(s.get("holdTime"), hold_time),
        password=_opt(s.get("password"), _password), source_address=s.get("sourceAddress"),
        keep_original_next_hop=s.get("keepOriginalNextHop"),
        max_restart_time=_opt(s.get("maxRestartTime"), restart_time), ttl_security=s.get("ttlSecurity"),
        ebgp_multihop=s.get("ebgpMultihop"), max_prefixes=s.get("maxPrefixes"),
        filters=tuple(s.get("filters") or ()), bfd=_opt(s.get("bfd"), _bfd))


# The kinds with a typed spec, each with the type and the conversion of its validated spec.
SPEC_TYPES: dict[str, type[Any]] = {"Node": NodeBGP, "BGPConfiguration": BGPConfigurationSpec, "BGPPeer": BGPPeerSpec}
_CONVERT: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "Node": _node,
    "BGPConfiguration": _configuration,
    "BGPPeer": _peer,
}


def bfd_settings(*layers: BfdLayer | None) -> BfdSettings:
    """Merge ``bfd`` layers field by field, later layers winning (cluster default, node, then BGPPeer)."""
    out = BfdSettings()
    for layer in layers:
        if layer is None:
            continue
        out = BfdSettings(out.enabled if layer.enabled is None else layer.enabled,
                          out.min_rx_us if layer.min_rx_us is None else layer.min_rx_us,
                          out.min_tx_us if layer.min_tx_us is None else layer.min_tx_us,
                          out.multiplier if layer.multiplier is None else layer.multiplier)
    return out


# -- the edge: a Resource the model did not validate ---------------------------------------------------
# Lists a reader takes item by item (as the agent always has): a refused item is left out and the rest kept;
# a refused reference in a prefix advertisement's ``communities`` leaves out that reference only.
_ITEMWISE: dict[str, dict[str, tuple[str, ...]]] = {
    "BGPConfiguration": {"communities": (), "prefixAdvertisements": ("communities",)},
}


def _under(path: str, where: str) -> bool:
    return path == where or path.startswith((f"{where}.", f"{where}["))


def _items_kept(items: Any, where: str, paths: list[str], nested: tuple[str, ...]) -> list[Any]:
    if not isinstance(items, list) or where in paths:
        return []
    kept = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]"
        inner = [format_path(here, name) for name in nested]
        if any(_under(p, here) and not any(_under(p, n) for n in inner) for p in paths):
            continue
        if inner and isinstance(item, dict):
            item = {**item, **{name: _items_kept(item[name], path, paths, ())
                               for name, path in zip(nested, inner, strict=True) if name in item}}
        kept.append(item)
    return kept


def _fields_kept(raw: Mapping[str, Any], where: str, paths: list[str],
                 itemwise: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """``raw`` without the fields the model refused (nor nulls, which it takes as absent)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        here = format_path(where, key)
        if value is None:
            continue
        if key in itemwise:
            out[key] = _items_kept(value, here, paths, itemwise[key])
        elif not any(_under(p, here) for p in paths):
            out[key] = value
    return out


def _check(res: Resource) -> tuple[dict[str, Any], tuple[FieldError, ...]]:
    """The model's spec check and name rule over a Resource it did not validate: what passed, and why the rest
    did not."""
    raw = res.spec or {}
    if not isinstance(raw, Mapping):
        return {}, (FieldError(path="spec", reason="must be a mapping", document=res.ref),)
    c = Checker(res.ref)
    out = SPECS[res.kind](c, dict(raw), "spec")
    name_check = NAME_CHECKS.get(res.kind)
    if name_check is not None and isinstance(out, dict):
        name_check(c, res.name, out)
    paths = [e.path for e in c.errors]
    if res.kind == "Node":   # only spec.bgp is BGP's; an error elsewhere in the Node leaves it alone
        bgp = raw.get("bgp")
        usable = {"bgp": _fields_kept(bgp, "spec.bgp", paths, {})} if isinstance(bgp, Mapping) else {}
    else:
        usable = _fields_kept(raw, "spec", paths, _ITEMWISE.get(res.kind, {}))
    return usable, tuple(c.errors)


# The typed spec is kept in the Resource object's own __dict__ (as functools.cached_property does, which a frozen
# dataclass allows): it lives and dies with that object, and a Resource replaced with another spec is a new object.
_CACHE = "_l3net_bgp_spec"


def checked(res: Resource, kind: type[S]) -> Checked[S]:
    """The typed spec of ``res`` (a Node, BGPConfiguration or BGPPeer, as ``kind`` says), computed once per
    Resource object. For a Resource the model validated ``errors`` is empty; for any other one the model's
    rules run here and every refused part is left out of the spec (see the module docstring)."""
    convert = _CONVERT.get(res.kind)
    if SPEC_TYPES.get(res.kind) is not kind or convert is None:
        raise ValueError(f"{res.ref} has no {kind.__name__}")
    got = res.__dict__.get(_CACHE)
    if got is None:
        if res.validated:
            got = Checked(convert(res.spec))
        else:
            usable, errors = _check(res)
            got = Checked(convert(usable), errors)
        res.__dict__[_CACHE] = got
    return cast(Checked[S], got)


def _strict(got: Checked[S]) -> S:
    if got.errors:
        raise ValidationError(list(got.errors))
    return got.spec


def node_bgp(res: Resource) -> NodeBGP:
    """A Node's typed ``spec.bgp`` (ValidationError when the model refuses a Node that it did not validate)."""
    return _strict(checked(res, NodeBGP))


def bgp_configuration_spec(res: Resource) -> BGPConfigurationSpec:
    """A BGPConfiguration's typed spec (ValidationError when the model refuses one that it did not validate)."""
    return _strict(checked(res, BGPConfigurationSpec))


def bgp_peer_spec(res: Resource) -> BGPPeerSpec:
    """A BGPPeer's typed spec (ValidationError when the model refuses one that it did not validate)."""
    return _strict(checked(res, BGPPeerSpec))


def typed_spec(res: Resource) -> BGPSpec:
    """The typed spec of any BGP kind (Node: its ``spec.bgp``); ValueError for another kind."""
    kind = SPEC_TYPES.get(res.kind)
    if kind is None:
        raise ValueError(f"{res.ref}: no typed spec for kind {res.kind}")
    return cast(BGPSpec, _strict(checked(res, kind)))
