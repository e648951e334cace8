"""l3net.model.client: validated resources in and out of the datastore.

Every write call (apply, create, replace, delete) becomes ONE etcd
transaction of compare-and-swap operations, so a batch that is refused, or
that loses a race, stores nothing. Checks against what is already stored
(overlapping IP pools, a BGPPeer pointing at its own node) run before the
transaction.

The checks read the store and then write with CAS on the keys being written.
etcd has no range compare in our transaction API, so an overlapping pool written
*under another name* between the read and the commit would slip through; every
IPPool write therefore also bumps one guard key (:func:`pool_guard_key`), read
before the pools are listed and compared in the same transaction. Concurrent
pool writers thus conflict; the loser re-reads and re-runs the overlap check
(every pool writer must bump the guard). ``apply`` retries a lost CAS a few
times by re-reading.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace as dc_replace
from datetime import UTC, datetime
from typing import Any

from l3net.datastore.base import Create, Datastore, Delete, KeyValue, Op, Update
from l3net.errors import Conflict, FieldError, ValidationError
from l3net.keys import KeyLayout
from l3net.model.decode import Invalid, decode
from l3net.model.resource import KINDS, KindInfo, Resource, kind_info
from l3net.model.validation import DEFAULT_NAMESPACE, parse_peer_ip

_log = logging.getLogger(__name__)

__all__ = ["AlreadyExists", "NotFound", "ResourceClient", "pool_guard_key"]

_APPLY_RETRIES = 5


class NotFound(LookupError):
    """The named resource does not exist (nothing was changed)."""

    def __init__(self, ref: str):
        self.ref = ref
        super().__init__(f"{ref} does not exist")


class AlreadyExists(Conflict):
    """``create`` found the resource already stored (nothing was changed)."""

    def __init__(self, ref: str):
        self.ref = ref
        super().__init__(f"{ref} already exists")


def pool_guard_key(keys: KeyLayout) -> str:
    """The key every IPPool write updates in its transaction (not a resource: ``parse_resource`` is None)."""
    return f"{keys.resources}ippools-guard"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ResourceClient:
    """Reads and writes l3net resources under one key prefix.

    Owns the resource part of the key space (``<prefix>resources/``). Stateless
    apart from the datastore handle, so safe to share between threads. Raises
    ValidationError (bad input or bad stored data), NotFound, AlreadyExists /
    Conflict (CAS lost) and DatastoreUnavailable.
    """

    def __init__(self, ds: Datastore, keys: KeyLayout):
        self.ds = ds
        self.keys = keys

    # -- keys ------------------------------------------------------------------
    @staticmethod
    def _info(kind: str) -> KindInfo:
        info = KINDS.get(kind) or kind_info(kind)
        if info is None:
            raise ValidationError(FieldError(path="kind", reason=f"unknown kind {kind!r}; expected one of "
                                                                 + ", ".join(sorted(KINDS))))
        return info

    @staticmethod
    def _ns(info: KindInfo, namespace: str | None) -> str | None:
        if not info.namespaced:
            return None
        return namespace or DEFAULT_NAMESPACE

    def key_for(self, res: Resource) -> str:
        return self.keys.resource(res.info.plural, res.name, self._ns(res.info, res.namespace))

    # -- reads -----------------------------------------------------------------
    def decode(self, kv: KeyValue) -> Resource:
        """The stored value as a Resource with ``resource_version`` = mod revision; ValidationError if malformed.

        Total: whatever the stored bytes are (not UTF-8, not JSON, nested deep enough for a RecursionError),
        the only exception is a ValidationError naming the key.
        """
        got = decode(self.keys, kv.key, kv.value, kv.mod_revision)
        if isinstance(got, Invalid):
            raise got.exception()
        return got

    def get(self, kind: str, name: str, namespace: str | None = None) -> Resource | None:
        """The stored resource, or None when absent."""
        info = self._info(kind)
        kv = self.ds.get(self.keys.resource(info.plural, name, self._ns(info, namespace)))
        return self.decode(kv) if kv is not None else None

    def list(self, kind: str, namespace: str | None = None) -> list[Resource]:
        """All stored resources of ``kind`` (namespace None = every namespace), sorted by key.

        A malformed stored value is treated as absent and logged with its key.
        """
        info = self._info(kind)
        prefix = self.keys.resource_dir(info.plural)
        if info.namespaced and namespace:
            prefix += f"{namespace}/"
        kvs, _ = self.ds.list(prefix)
        out = []
        for kv in kvs:
            try:
                out.append(self.decode(kv))
            except ValidationError as exc:
                _log.warning("skipping malformed resource key=%s error=%s", kv.key, exc)
        return out

    # -- writes ----------------------------------------------------------------
    def apply(self, resources: Sequence[Resource]) -> list[Resource]:
        """Create or update each resource, all in one transaction. Returns what was stored."""
        return self._write(resources, mode="apply")

    def create(self, resources: Sequence[Resource]) -> list[Resource]:
        """Create each resource; AlreadyExists (changing nothing) if any is stored."""
        return self._write(resources, mode="create")

    def replace(self, resources: Sequence[Resource]) -> list[Resource]:
        """Replace each resource; NotFound (changing nothing) if any is absent."""
        return self._write(resources, mode="replace")

    def delete(self, resources: Sequence[Resource], ignore_missing: bool = False) -> list[Resource]:
        """Delete each resource in one transaction; NotFound (changing nothing) if any is absent."""
        ops: list[Op] = []
        deleted: list[Resource] = []
        for res in resources:
            kv = self.ds.get(self.key_for(res))
            if kv is None:
                if ignore_missing:
                    continue
                raise NotFound(res.ref)
            if res.resource_version and res.resource_version != kv.mod_revision:
                raise Conflict(f"{res.ref} changed since resourceVersion {res.resource_version}")
            ops.append(Delete(kv.key, kv.mod_revision))
            deleted.append(self._decode_lenient(kv, res))
        if ops:
            self.ds.commit(ops)
        return deleted

    def delete_one(self, kind: str, name: str, namespace: str | None = None) -> Resource:
        """Delete one resource by name; NotFound if absent. Returns what was deleted."""
        info = self._info(kind)
        key = self.keys.resource(info.plural, name, self._ns(info, namespace))
        kv = self.ds.get(key)
        ref = f"{info.kind}/{self._ns(info, namespace)}/{name}" if info.namespaced else f"{info.kind}/{name}"
        if kv is None:
            raise NotFound(ref)
        self.ds.commit([Delete(key, kv.mod_revision)])
        return self._decode_lenient(kv, Resource(kind=info.kind, name=name, namespace=self._ns(info, namespace)))

    def _decode_lenient(self, kv: KeyValue, fallback: Resource) -> Resource:
        # Deleting a malformed value is how an operator cleans it up, so it must not fail.
        try:
            return self.decode(kv)
        except ValidationError:
            return fallback

    def _write(self, resources: Sequence[Resource], mode: str) -> list[Resource]:
        resources = [self._normalise(r) for r in resources]
        self._check_batch_unique(resources)
        guarded = any(r.kind == "IPPool" for r in resources)
        for attempt in range(_APPLY_RETRIES):
            guard = self._pool_guard_ops() if guarded else []  # read before the overlap check lists the pools
            ops, stored = self._plan(resources, mode)
            self._check_against_store(resources)
            try:
                rev = self.ds.commit([*ops, *guard])
            except Conflict:
                # Someone wrote one of our keys between read and commit. Only apply
                # (no resourceVersion given) may simply re-read and try again; so may a
                # pool write that lost on the guard key: _plan re-checks create/replace and
                # resourceVersion, and the overlap check runs again against the new pools.
                explicit = any(r.resource_version for r in resources)
                if ((mode != "apply" or explicit) and not guarded) or attempt == _APPLY_RETRIES - 1:
                    if mode == "create":
                        for r in resources:
                            if self.ds.get(self.key_for(r)) is not None:
                                raise AlreadyExists(r.ref) from None
                    raise
                _log.info("apply lost a CAS race; retrying attempt=%d", attempt + 1)
                continue
            _log.info("stored resources mode=%s count=%d revision=%d", mode, len(ops), rev)
            return [dc_replace(r, resource_version=rev) for r in stored]
        raise AssertionError("unreachable")

    def _pool_guard_ops(self) -> list[Op]:
        key = pool_guard_key(self.keys)
        kv = self.ds.get(key)
        value = json.dumps({"lastPoolWrite": _now()}).encode()
        return [Create(key, value)] if kv is None else [Update(key, value, kv.mod_revision)]

    def _normalise(self, res: Resource) -> Resource:
        if res.kind not in KINDS:
            raise ValidationError(FieldError(path="kind", reason=f"unknown kind {res.kind!r}", document=res.ref))
        if res.info.namespaced and not res.namespace:
            return dc_replace(res, namespace=DEFAULT_NAMESPACE)
        if not res.info.namespaced and res.namespace:
            return dc_replace(res, namespace=None)
        return res

    @staticmethod
    def _check_batch_unique(resources: Sequence[Resource]) -> None:
        seen: set[str] = set()
        for r in resources:
            if r.ref in seen:
                raise ValidationError(FieldError(path="metadata.name", document=r.ref,
                                                 reason="the same resource appears twice in one request"))
            seen.add(r.ref)

    def _plan(self, resources: Sequence[Resource], mode: str) -> tuple[list[Op], list[Resource]]:
        ops: list[Op] = []
        stored: list[Resource] = []
        for res in resources:
            key = self.key_for(res)
            kv = self.ds.get(key)
            if kv is None:
                if mode == "replace":
                    raise NotFound(res.ref)
                if res.resource_version and mode != "create":
                    raise Conflict(f"{res.ref} has resourceVersion {res.resource_version} but no longer exists")
                new = self._with_metadata(res, {"uid": str(uuid.uuid4()), "creationTimestamp": _now()})
                ops.append(Create(key, new.to_json()))
            else:
                if mode == "create":
                    raise AlreadyExists(res.ref)
                if res.resource_version and res.resource_version != kv.mod_revision:
                    raise Conflict(f"{res.ref} changed since resourceVersion {res.resource_version} "
                                   f"(now {kv.mod_revision})")
                self._check_immutable(res, kv)
                new = self._with_metadata(res, self._stored_identity(kv))
                ops.append(Update(key, new.to_json(), kv.mod_revision))
            stored.append(new)
        return ops, stored

    def _check_immutable(self, res: Resource, kv: KeyValue) -> None:
        """An IPPool's cidr and blockSize are fixed (Calico's rule): blocks already carved from it would be
        orphaned. Disable the pool and create a new one instead."""
        if res.kind != "IPPool":
            return
        try:
            old = self.decode(kv)
        except ValidationError:
            return  # a malformed stored pool may be overwritten
        errors = [FieldError(path=f"spec.{f}", document=res.ref,
                             reason=f"cannot be changed on an existing IPPool (stored {old.spec.get(f)}); "
                                    "disable this pool and create a new one")
                  for f in ("cidr", "blockSize") if old.spec.get(f) != res.spec.get(f)]
        if errors:
            raise ValidationError(errors)

    @staticmethod
    def _stored_identity(kv: KeyValue) -> dict[str, Any]:
        """uid and creationTimestamp of the stored version (kept across updates)."""
        try:
            meta = json.loads(kv.value).get("metadata", {})
        except (ValueError, AttributeError):
            meta = {}
        keep = {k: meta[k] for k in ("uid", "creationTimestamp") if isinstance(meta, dict) and
                isinstance(meta.get(k), str)}
        keep.setdefault("uid", str(uuid.uuid4()))
        keep.setdefault("creationTimestamp", _now())
        return keep

    @staticmethod
    def _with_metadata(res: Resource, identity: dict[str, Any]) -> Resource:
        extra = {k: v for k, v in res.extra_metadata.items() if k not in ("uid", "creationTimestamp")}
        extra.update(identity)
        return dc_replace(res, extra_metadata=extra, resource_version=0)

    # -- cross-resource checks ---------------------------------------------------
    def _check_against_store(self, resources: Sequence[Resource]) -> None:
        errors: list[FieldError] = []
        new_pools = [r for r in resources if r.kind == "IPPool"]
        if new_pools:
            errors += self._pool_overlaps(new_pools)
        weps = [r for r in resources if r.kind == "WorkloadEndpoint" and r.spec.get("ipNetworks")]
        if weps:
            errors += self._workload_addresses_in_pools(weps, new_pools)
        peers = [r for r in resources if r.kind == "BGPPeer" and r.spec.get("node") and r.spec.get("peerIP")]
        if peers:
            errors += self._peer_self_checks(peers, [r for r in resources if r.kind == "Node"])
        if errors:
            raise ValidationError(errors)

    def _pool_overlaps(self, new_pools: Sequence[Resource]) -> list[FieldError]:
        incoming = {p.name for p in new_pools}
        candidates: list[tuple[Resource, str]] = [(p, "stored") for p in self.list("IPPool")
                                                  if p.name not in incoming]
        candidates += [(p, "in this request") for p in new_pools]
        errors = []
        for pool in new_pools:
            net = ipaddress.ip_network(pool.spec["cidr"])
            for other, where in candidates:
                if other.name == pool.name:
                    continue
                onet = ipaddress.ip_network(other.spec["cidr"])
                if onet.version == net.version and onet.overlaps(net):  # type: ignore[arg-type]
                    errors.append(FieldError(path="spec.cidr", document=pool.ref,
                                             reason=f"IPPool {pool.name} ({net}) overlaps IPPool {other.name} "
                                                    f"({onet}, {where})"))
        return errors

    def _workload_addresses_in_pools(self, weps: Sequence[Resource], new_pools: Sequence[Resource]) -> list[FieldError]:
        """Every workload address inside an IPPool (stored or in this request; disabled pools count, as in
        the agent, which skips an endpoint that is not: ``felix.calc.compute``)."""
        pools = [ipaddress.ip_network(p.spec["cidr"]) for p in [*self.list("IPPool"), *new_pools]]
        errors = []
        for wep in weps:
            for i, text in enumerate(wep.spec["ipNetworks"]):
                net = ipaddress.ip_network(text)
                if not any(p.version == net.version and net.subnet_of(p) for p in pools):  # type: ignore[arg-type]
                    errors.append(FieldError(path=f"spec.ipNetworks[{i}]", document=wep.ref,
                                             reason=f"{text} is outside every IPPool; the agent would not route it"))
        return errors

    def _peer_self_checks(self, peers: Iterable[Resource], new_nodes: Sequence[Resource]) -> list[FieldError]:
        nodes = {n.name: n for n in new_nodes}
        errors = []
        for peer in peers:
            node_name = peer.spec["node"]
            node = nodes.get(node_name) or self.get("Node", node_name)
            if node is None:
                continue
            ip, _ = parse_peer_ip(peer.spec["peerIP"])
            bgp = node.spec.get("bgp", {})
            own = {str(ipaddress.ip_interface(bgp[f]).ip) for f in ("ipv4Address", "ipv6Address") if bgp.get(f)}
            if ip in own:
                errors.append(FieldError(path="spec.peerIP", document=peer.ref,
                                         reason=f"{ip} is node {node_name}'s own address; a node cannot peer "
                                                "with itself"))
        return errors
