"""felix.calc: the in-memory model of the datastore and the pure calculation of the desired state.

:class:`Model` holds every decoded value by key. A value that does not decode
or validate is logged with its key and treated exactly like a deletion, so one
bad record never crashes the agent or disturbs anything else (Felix's
ValidationFilter). :func:`compute` turns the model plus the node's links and
the routes learned over BGP into one immutable :class:`DesiredState`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from felix.config import config_prefix
from felix.desired import Advertisement, DesiredState, InterfaceSpec, RouteSpec
from l3net.keys import KeyLayout
from l3net.model.resource import KINDS_BY_PLURAL, Resource
from l3net.model.validation import resource_from_document

_log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class KeyUpdateLike(Protocol):
    """What the syncer hands over (``l3net.syncer.KeyUpdate``): value None means deleted."""

    key: str
    value: bytes | None
    revision: int


@dataclass(frozen=True)
class Workload:
    """The parts of a WorkloadEndpoint the dataplane needs."""

    key: str
    node: str
    ifname: str
    networks: tuple[IPNetwork, ...]
    resource: Resource


@dataclass(frozen=True)
class Pool:
    key: str
    cidr: IPNetwork
    disable_bgp_export: bool
    disabled: bool


@dataclass(frozen=True)
class Affinity:
    node: str
    cidr: IPNetwork
    state: str


@dataclass(frozen=True)
class Link:
    """A network interface of this node as netlink reports it."""

    name: str
    index: int
    up: bool


def _decode_resource(key: str, raw: bytes) -> Resource:
    """Decode and validate one stored resource; raises ValueError (or ValidationError) when bad."""
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return resource_from_document(doc, source=key)


def _workload(key: str, res: Resource) -> Workload:
    spec = res.spec
    node, ifname, nets = spec.get("node"), spec.get("interfaceName"), spec.get("ipNetworks", [])
    if not isinstance(node, str) or not node:
        raise ValueError("spec.node: required string")
    if not isinstance(ifname, str) or not ifname or len(ifname) > 15 or "/" in ifname:
        raise ValueError(f"spec.interfaceName: must be an interface name, got {ifname!r}")
    if not isinstance(nets, list):
        raise ValueError("spec.ipNetworks: must be a list")
    parsed = []
    for i, n in enumerate(nets):
        try:
            parsed.append(ipaddress.ip_network(str(n), strict=False))
        except ValueError as exc:
            raise ValueError(f"spec.ipNetworks[{i}]: {exc}") from exc
    return Workload(key=key, node=node, ifname=ifname, networks=tuple(parsed), resource=res)


def _pool(key: str, res: Resource) -> Pool:
    try:
        cidr = ipaddress.ip_network(str(res.spec.get("cidr")), strict=False)
    except ValueError as exc:
        raise ValueError(f"spec.cidr: {exc}") from exc
    return Pool(key=key, cidr=cidr, disable_bgp_export=bool(res.spec.get("disableBGPExport", False)),
                disabled=bool(res.spec.get("disabled", False)))


class Model:
    """Every value of the datastore this agent cares about, decoded, by key.

    Mutated only by :meth:`apply` on the agent's loop; not thread-safe. Idempotent:
    applying the same update twice leaves the same model.
    """

    def __init__(self, keys: KeyLayout) -> None:
        self.keys = keys
        self.resources: dict[str, Resource] = {}
        self.workloads: dict[str, Workload] = {}
        self.pools: dict[str, Pool] = {}
        self.affinities: dict[str, Affinity] = {}
        self.invalid: dict[str, str] = {}
        # Raw values of the datastore's config/ keys (felix.config parses them; bad ones are its to log).
        self.config: dict[str, bytes] = {}
        self.config_prefix = config_prefix(keys)
        self.revision = 0

    def apply(self, updates: Iterable[KeyUpdateLike]) -> int:
        """Apply a batch of key updates; returns how many were applied."""
        n = 0
        for up in updates:
            n += 1
            self.revision = max(self.revision, up.revision)
            self._forget(up.key)
            if up.value is None:
                continue
            try:
                self._store(up.key, up.value)
            except (ValueError, TypeError, KeyError) as exc:  # ValidationError is a ValueError
                self._forget(up.key)
                self.invalid[up.key] = str(exc)
                _log.warning("invalid datastore value, treating as absent key=%s error=%s", up.key, exc)
        return n

    def _forget(self, key: str) -> None:
        for d in (self.resources, self.workloads, self.pools, self.affinities, self.invalid, self.config):
            d.pop(key, None)

    def _store(self, key: str, raw: bytes) -> None:
        if key.startswith(self.config_prefix):
            self.config[key] = raw
            return
        parsed = self.keys.parse_resource(key)
        if parsed is not None:
            plural = parsed[0]
            if plural not in KINDS_BY_PLURAL:
                return
            res = _decode_resource(key, raw)
            if res.kind != KINDS_BY_PLURAL[plural].kind:
                raise ValueError(f"kind: {res.kind!r} stored under {plural}/")
            if res.kind == "WorkloadEndpoint":
                self.workloads[key] = _workload(key, res)
            elif res.kind == "IPPool":
                self.pools[key] = _pool(key, res)
            self.resources[key] = res
            return
        aff = self.keys.parse_affinity(key)
        if aff is not None:
            value = json.loads(raw)
            if not isinstance(value, dict) or not isinstance(value.get("state"), str):
                raise ValueError("state: required string")
            self.affinities[key] = Affinity(node=aff[0], cidr=ipaddress.ip_network(aff[1]), state=value["state"])
        # Blocks, handles and the rest of IPAM are not needed by the dataplane.

    def resources_of(self, kind: str) -> list[Resource]:
        return [r for r in self.resources.values() if r.kind == kind]


Builder = Callable[[Model, str], Any]


def _covered(net: IPNetwork, blocks: Sequence[IPNetwork]) -> bool:
    return any(net.version == b.version and net.subnet_of(b) for b in blocks)  # type: ignore[arg-type]


def compute(model: Model, node: str, links: Mapping[str, Link], learned: Mapping[str, Sequence[str]], *,
            node_ips: Iterable[str] = (), policy_builder: Builder | None = None,
            bgp_builder: Builder | None = None) -> DesiredState:
    """The dataplane this node should have. Pure: same inputs, same (equal) output.

    - a ``/32`` (``/128``) scope-link route per address of each local workload whose
      interface exists and is up (until then the workload is listed as waiting);
    - a blackhole per **confirmed** block affine to this node;
    - each learned prefix via its next hops (ECMP when several), except prefixes equal to
      our own blocks or to our own workload addresses (we own those locally); a learned
      /32 inside our block is kept: another node borrowed that address;
    - BGP advertisements: our confirmed blocks, and a /32 per local address outside them
      (borrowed), skipping pools with ``disableBGPExport``.
    """
    local = sorted((w for w in model.workloads.values() if w.node == node), key=lambda w: w.key)
    blocks = sorted({a.cidr for a in model.affinities.values() if a.node == node and a.state == "confirmed"},
                    key=lambda n: (n.version, n.network_address, n.prefixlen))
    no_export = [p.cidr for p in model.pools.values() if p.disable_bgp_export]

    routes: dict[str, RouteSpec] = {}
    interfaces: set[InterfaceSpec] = set()
    waiting: list[str] = []
    adverts: set[Advertisement] = set()
    local_dsts: set[str] = set()
    for w in local:
        link = links.get(w.ifname)
        present = link is not None and link.up
        if present:
            interfaces.add(InterfaceSpec(w.ifname))
        else:
            waiting.append(w.ifname)
        for net in w.networks:
            dst = str(net)
            local_dsts.add(dst)
            if dst in routes:
                _log.warning("two local workloads claim one address dst=%s kept=%s ignored=%s",
                             dst, routes[dst].ifname, w.ifname)
                continue
            if present:
                routes[dst] = RouteSpec(dst=dst, kind="workload", ifname=w.ifname, ifindex=link.index)  # type: ignore[union-attr]
            if not _covered(net, blocks) and not _covered(net, no_export):
                adverts.add(Advertisement(prefix=dst, reason="borrowed"))

    block_strs = set()
    for b in blocks:
        dst = str(b)
        block_strs.add(dst)
        routes.setdefault(dst, RouteSpec(dst=dst, kind="blackhole"))
        if not _covered(b, no_export):
            adverts.add(Advertisement(prefix=dst, reason="block"))

    own_ips = set(node_ips)
    for prefix, hops in learned.items():
        try:
            dst = str(ipaddress.ip_network(prefix, strict=False))
        except ValueError:
            _log.warning("ignoring learned route with a bad prefix prefix=%r", prefix)
            continue
        if dst in block_strs or dst in local_dsts or dst in routes:
            continue
        nh = tuple(sorted({h for h in hops if h and h not in own_ips}))
        if nh:
            routes[dst] = RouteSpec(dst=dst, kind="learned", next_hops=nh)

    policy = policy_builder(model, node) if policy_builder else None
    bgp_view = bgp_builder(model, node) if bgp_builder else None
    return DesiredState(routes=frozenset(routes.values()), interfaces=frozenset(interfaces),
                        advertisements=frozenset(adverts), policy=policy, bgp_view=bgp_view,
                        local_endpoints=len(local), local_blocks=len(blocks),
                        waiting_for_interfaces=tuple(sorted(set(waiting))))
