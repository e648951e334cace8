"""l3net.ipam.allocator: Calico's block-affinity IPAM on the Datastore protocol.

Every change is one compare-and-swap transaction: an allocation updates the
block and the workload's handle together, so block and handle never disagree.
A lost CAS re-reads and retries (at most ``RETRIES`` times, as Calico's
``datastoreRetries``). In steady state an ADD or a DEL is that one transaction and
no read: the allocator acts on what it last read or wrote (:mod:`l3net.ipam.cache`),
with every cached read it relies on compared in the same transaction, and reads
the store only when such a commit fails or the cache has nothing to offer.
Claiming follows Calico: affinity ``pending`` -> block created if absent with
``affinity: host:<node>`` -> affinity ``confirmed``; a pending affinity is
treated as absent by every reader.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from l3net.datastore.base import Check, CheckPrefix, Create, Datastore, Delete, KeyValue, Op, Put, Update
from l3net.errors import Conflict, ValidationError
from l3net.ipam.block import Block, host_affinity
from l3net.ipam.cache import AllocContext, IPAMCache
from l3net.ipam.handle import Handle, sticky_hold_handle
from l3net.ipam.pools import IPAMConfig, Pool, pool_from_resource
from l3net.ipam.report import IPAMReport, build_report
from l3net.ipam.reservations import Reservations, reservations_of
from l3net.keys import KeyLayout, token_cidr
from l3net.model.decode import Invalid, decode
from l3net.model.resource import Resource

_log = logging.getLogger(__name__)

RETRIES = 100

AFFINITY_PENDING = "pending"
AFFINITY_CONFIRMED = "confirmed"
AFFINITY_PENDING_DELETION = "pendingDeletion"


class IPAMError(Exception):
    """Base of every IPAM refusal; the message says what and why."""


class NoAddresses(IPAMError):
    """No address can be given: pools exhausted, node at its block limit with strict affinity, no pool."""


class AddressUnavailable(IPAMError):
    """A requested static address is outside every enabled pool or already in use."""


class RetriesExhausted(IPAMError):
    """Lost ``RETRIES`` CAS races in a row (heavy contention or a bug)."""


def _selects_all(selector: str | None) -> bool:
    return (selector or "").strip() in ("", "all()")


def _selected(selector: str | None, labels: Mapping[str, str] | None,
              matches: Callable[[Mapping[str, str]], bool]) -> bool:
    """Does a pool's node or namespace ``selector`` pick an object with ``labels`` (None: the model refused it)?"""
    if labels is None:
        # A Node or Namespace the model refuses is absent, as the agent has it, with one exception: only a pool
        # that selects everything takes it. Labels {} would let a selector such as !has(zone) pick a pool its
        # real labels exclude, an address Calico never gives (its IPAM refuses the ADD when the Node cannot be
        # read), so a selecting pool fails closed; an all() pool serves it as it serves an absent Node.
        return _selects_all(selector)
    return matches(labels)


class _DecodeOnce:
    """The model's :func:`~l3net.model.decode.decode` of the stored resources one IPAM call reads, each stored
    value once: an ADD's retries re-read the store but do not validate an unchanged value again.

    Owned by the call that made it (never kept, never shared between threads).
    """

    def __init__(self, keys: KeyLayout) -> None:
        self.keys = keys
        self._seen: dict[str, tuple[int, bytes, Resource | Invalid]] = {}

    def __call__(self, kv: KeyValue) -> Resource | Invalid:
        seen = self._seen.get(kv.key)
        if seen is not None and seen[0] == kv.mod_revision and seen[1] == kv.value:
            return seen[2]
        got = decode(self.keys, kv.key, kv.value, kv.mod_revision)
        self._seen[kv.key] = (kv.mod_revision, kv.value, got)
        return got


def _affinity_value(state: str) -> bytes:
    return json.dumps({"state": state}).encode()


def _affinity_state(kv: KeyValue) -> str | None:
    try:
        state = json.loads(kv.value).get("state")
    except (ValueError, AttributeError):
        return None
    return state if isinstance(state, str) else None


class IPAM:
    """Allocates workload addresses from pools via node-affine blocks stored in etcd.

    Owns ``<prefix>ipam/`` (blocks, affinities, handles, sticky records, config).
    Keeps no state between calls but ``cache`` (an :class:`IPAMCache`, thread-safe; pass one
    to share it between instances on the same datastore, as the agent's CNI server does),
    so one instance may serve many threads. Raises IPAMError subclasses for refusals, and
    lets DatastoreUnavailable through untouched (callers map it to "try again").
    """

    def __init__(self, ds: Datastore, keys: KeyLayout, *, clock: Callable[[], float] = time.time,
                 sticky_hold_seconds: float | None = None, cache: IPAMCache | None = None) -> None:
        self.ds = ds
        self.keys = keys
        self.clock = clock
        self._sticky_hold_override = sticky_hold_seconds
        self.cache = cache if cache is not None else IPAMCache()

    # -- settings and pools ---------------------------------------------------
    def config(self) -> IPAMConfig:
        return self._config_from(self.ds.get(self.keys.ipam_config))

    def _config_from(self, kv: KeyValue | None) -> IPAMConfig:
        try:
            return IPAMConfig.from_json(kv.value if kv else None, self.keys.ipam_config)
        except ValidationError as exc:
            _log.warning("malformed IPAM config; using defaults error=%s", exc)
            return IPAMConfig()

    def set_config(self, **changes: Any) -> IPAMConfig:
        """Change IPAM settings (Calico names: strictAffinity, maxBlocksPerHost, ...) with CAS."""
        for _ in range(RETRIES):
            kv = self.ds.get(self.keys.ipam_config)
            current = json.loads(self._config_from(kv).to_json())
            current.update(changes)
            cfg = IPAMConfig.from_dict(current, "ipam configure")
            op: Op = Update(self.keys.ipam_config, cfg.to_json(), kv.mod_revision) if kv else \
                Create(self.keys.ipam_config, cfg.to_json())
            try:
                self.ds.commit([op])
                return cfg
            except Conflict:
                continue
        raise RetriesExhausted("could not update the IPAM config")

    def pools(self) -> list[Pool]:
        return [p for p, _ in self._pools_read()]

    def _pools_read(self, decoded: _DecodeOnce | None = None) -> list[tuple[Pool, KeyValue]]:
        kvs, _ = self.ds.list(self.keys.resource_dir("ippools"))
        decoded = decoded or _DecodeOnce(self.keys)
        out = []
        for kv in kvs:
            res = decoded(kv)
            if isinstance(res, Invalid):
                _log.warning("ignoring malformed IPPool key=%s error=%s", kv.key, res)
                continue
            out.append((pool_from_resource(res), kv))
        return out

    def reservations(self) -> Reservations:
        """Every IPReservation's ``reservedCIDRs``: never handed out by :meth:`auto_assign`."""
        return self._reservations_read()[0]

    def _reservations_read(self, decoded: _DecodeOnce | None = None
                           ) -> tuple[Reservations, tuple[Check | CheckPrefix, ...]]:
        """The reservations and the checks that none was written (each one's key) or added (the prefix) since."""
        prefix = self.keys.resource_dir("ipreservations")
        kvs, rev = self.ds.list(prefix)
        checks = (CheckPrefix(prefix, rev), *(Check(kv.key, kv.mod_revision) for kv in kvs))
        decoded = decoded or _DecodeOnce(self.keys)
        return reservations_of(decoded(kv) for kv in kvs), checks

    def _labels_at(self, key: str, decoded: _DecodeOnce) -> tuple[dict[str, str] | None, Check]:
        """A Node's or Namespace's labels as the model decodes it ({} when absent; None, logged, when the model
        refuses it) and the check that it has not changed since."""
        kv = self.ds.get(key)
        if kv is None:
            return {}, Check(key, 0)
        res = decoded(kv)
        if isinstance(res, Invalid):
            _log.warning("treating malformed resource as absent key=%s error=%s", key, res)
            return None, Check(key, kv.mod_revision)
        return dict(res.labels), Check(key, kv.mod_revision)

    def eligible_pools(self, node: str, wanted: Sequence[str] | None = None, version: int = 4,
                       namespace: str | None = None) -> list[Pool]:
        """Enabled pools of ``version`` whose nodeSelector picks ``node`` (and namespaceSelector ``namespace``,
        when given); ``wanted`` (names or CIDRs) narrows."""
        return [p for p, _ in self._eligible(node, wanted, version, namespace)]

    def _eligible(self, node: str, wanted: Sequence[str] | None, version: int, namespace: str | None,
                  decoded: _DecodeOnce | None = None) -> list[tuple[Pool, tuple[Check, ...]]]:
        """:meth:`eligible_pools`, each pool with the checks its eligibility rests on (see AllocContext)."""
        decoded = decoded or _DecodeOnce(self.keys)
        pools = [(p, kv) for p, kv in self._pools_read(decoded) if p.cidr.version == version]
        if wanted:
            chosen: list[tuple[Pool, KeyValue]] = []
            for w in wanted:
                match = [(p, kv) for p, kv in pools if w in (p.name, str(p.cidr))]
                if not match:
                    raise NoAddresses(f"IP pool {w!r} does not exist")
                chosen += [m for m in match if m not in chosen]
            pools = chosen
        labels, node_check = self._labels_at(self.keys.resource("nodes", node), decoded)
        out = [(p, (Check(kv.key, kv.mod_revision),) + (() if _selects_all(p.node_selector) else (node_check,)))
               for p, kv in pools if not p.disabled and _selected(p.node_selector, labels, p.matches_node)]
        if namespace is not None and any(p.namespace_selector for p, _ in out):
            ns_labels, ns_check = self._labels_at(self.keys.resource("namespaces", namespace), decoded)
            if ns_labels is not None:
                ns_labels["projectcalico.org/name"] = namespace  # Calico's implicit name label
            out = [(p, checks + (() if _selects_all(p.namespace_selector) else (ns_check,)))
                   for p, checks in out if _selected(p.namespace_selector, ns_labels, p.matches_namespace)]
        return out

    # -- reads ----------------------------------------------------------------
    def _read_block(self, cidr: str) -> tuple[KeyValue, Block] | None:
        """The block and its kv; None when absent or malformed (a malformed block is skipped, never rewritten)."""
        got = self._read_block_raw(cidr)
        if got is None or got[1] is None:
            return None
        return got[0], got[1]

    def _read_block_raw(self, cidr: str) -> tuple[KeyValue, Block | None] | None:
        """None when absent; ``(kv, None)`` when stored but malformed (logged with its key; ipam check reports it)."""
        kv = self.ds.get(self.keys.block(cidr))
        if kv is None:
            return None
        try:
            return kv, Block.from_json(kv.value, kv.key)
        except ValidationError as exc:
            _log.warning("skipping malformed IPAM block key=%s error=%s", kv.key, exc)
            return kv, None

    def _read_handle(self, handle_id: str) -> tuple[KeyValue | None, Handle]:
        kv = self.ds.get(self.keys.handle(handle_id))
        return (kv, Handle.from_kv(kv, handle_id)) if kv else (None, Handle(handle_id))

    def _handle_ops(self, kv: KeyValue | None, handle: Handle) -> list[Op]:
        key = self.keys.handle(handle.handle_id)
        if not handle.blocks:
            return [Delete(key, kv.mod_revision)] if kv else []
        if kv is None:
            return [Create(key, handle.to_json())]
        return [Update(key, handle.to_json(), kv.mod_revision)]

    def affinities(self, node: str, state: str | None = AFFINITY_CONFIRMED) -> list[tuple[KeyValue, str]]:
        """``(kv, cidr)`` of the node's affinities in ``state`` (None = any), lowest CIDR first."""
        kvs, _ = self.ds.list(self.keys.node_affinities(node))
        out = []
        for kv in kvs:
            parsed = self.keys.parse_affinity(kv.key)
            if parsed and (state is None or _affinity_state(kv) == state):
                out.append((kv, parsed[1]))
        out.sort(key=lambda item: ipaddress.ip_network(item[1]))
        return out

    def handle_ips(self, handle_id: str) -> list[str]:
        """Addresses currently held by ``handle_id`` (empty when none)."""
        _, handle = self._read_handle(handle_id)
        ips: list[str] = []
        for cidr in handle.blocks:
            got = self._read_block(cidr)
            if got:
                ips += got[1].ips_of(handle_id)
        return ips

    # -- allocation -----------------------------------------------------------
    def auto_assign(self, handle_id: str, node: str, attrs: dict[str, Any] | None = None, num_v4: int = 1,
                    pools: Sequence[str] | None = None, sticky_key: str | None = None) -> list[str]:
        """``num_v4`` addresses for ``handle_id`` on ``node``; a retry with the same handle returns the same ones."""
        if num_v4 == 1 and not sticky_key:
            ip = self._fast_assign(handle_id, node, {**(attrs or {}), "node": node}, pools)
            if ip is not None:
                _log.info("assigned handle=%s node=%s ips=%s", handle_id, node, ip)
                return [ip]
        existing = self.handle_ips(handle_id)
        if len(existing) >= num_v4:
            return existing[:num_v4] if num_v4 else existing
        secondary = {**(attrs or {}), "node": node}
        got: list[str] = []
        try:
            while len(existing) + len(got) < num_v4:
                got.append(self._assign_one(handle_id, node, secondary, pools, sticky_key if not got else None))
        except BaseException:
            if got:
                self.release_ips(got)
            raise
        _log.info("assigned handle=%s node=%s ips=%s", handle_id, node, ",".join(got))
        return existing + got

    def _context_key(self, node: str, wanted: Sequence[str] | None, namespace: str | None) -> tuple[Any, ...]:
        return (self.keys.prefix, node, tuple(wanted) if wanted else None, namespace)

    def _fast_assign(self, handle_id: str, node: str, secondary: dict[str, Any],
                     wanted: Sequence[str] | None) -> str | None:
        """One address from a cached affine block in one transaction and no read; None to take the reading path.

        The transaction creates the handle (so a handle that exists, a retried ADD, fails it), updates the
        block on its cached revision and checks the affinity, the pool (and labels it selects by) and the
        reservations as cached. Any of them stale: Conflict, nothing written, the entries dropped, None.
        """
        ns = secondary.get("namespace")
        ckey = self._context_key(node, wanted, ns if isinstance(ns, str) else None)
        ctx = self.cache.context(ckey)
        if ctx is None:
            return None
        for cidr, akey, arev in self.cache.node_blocks(self.keys.node_affinities(node)):
            bkey = self.keys.block(cidr)
            entry = self.cache.take_block(bkey)
            if entry is None:
                return None  # not cached, or another thread is using it: read
            rev, block = entry
            guards = ctx.guards_for(block.cidr)
            if guards is None or block.affinity != host_affinity(node):
                self.cache.put_block(bkey, rev, block)
                continue
            ip = block.allocate(handle_id, secondary, ctx.reserved.ordinals(block.cidr))
            if ip is None:  # full as cached (allocate changed nothing)
                self.cache.put_block(bkey, rev, block)
                continue
            handle = Handle(handle_id)
            handle.add(cidr, 1)
            hkey = self.keys.handle(handle_id)
            try:
                new_rev = self.ds.commit([Update(bkey, block.to_json(), rev), Create(hkey, handle.to_json()),
                                          Check(akey, arev), *guards])
            except Conflict:
                # The block, the handle (a retried ADD), the affinity, a pool or a reservation changed: read.
                self.cache.drop_context(ckey)
                _log.debug("IPAM cached block stale; reading handle=%s block=%s", handle_id, cidr)
                return None
            self.cache.put_block(bkey, new_rev, block)
            self.cache.put_handle(hkey, new_rev, handle)
            return ip
        return None  # every cached block is full: the reading path claims or borrows

    def _assign_one(self, handle_id: str, node: str, secondary: dict[str, Any], wanted: Sequence[str] | None,
                    sticky_key: str | None) -> str:
        decoded = _DecodeOnce(self.keys)  # every pass re-reads; an unchanged resource is validated once
        for attempt in range(RETRIES):
            try:
                ip = self._try_assign_one(handle_id, node, secondary, wanted, sticky_key, decoded)
                if ip is not None:
                    return ip
            except Conflict as exc:
                _log.debug("IPAM CAS lost; retrying handle=%s attempt=%d err=%s", handle_id, attempt, exc)
                time.sleep(random.uniform(0, 0.002 * min(attempt, 10)))
        raise RetriesExhausted(f"gave up assigning an address for {handle_id} after {RETRIES} CAS conflicts")

    def _try_assign_one(self, handle_id: str, node: str, secondary: dict[str, Any], wanted: Sequence[str] | None,
                        sticky_key: str | None, decoded: _DecodeOnce) -> str | None:
        """One pass; returns the address, None to go round again (a block was just claimed), or raises."""
        cfg = self.config()
        ns = secondary.get("namespace")
        namespace = ns if isinstance(ns, str) else None
        eligible = self._eligible(node, wanted, 4, namespace, decoded)
        pools = [p for p, _ in eligible]
        if not pools:
            raise NoAddresses(f"no enabled IPv4 pool selects node {node!r}" +
                              (f" and namespace {ns!r}" if isinstance(ns, str) else ""))
        reserved, reserved_checks = self._reservations_read(decoded)
        self.cache.set_context(self._context_key(node, wanted, namespace),
                               AllocContext(tuple(eligible), reserved, reserved_checks))
        sticky_ops: list[Op] = []
        sticky_owned = False
        if sticky_key:
            taken = self._take_sticky(sticky_key, handle_id, node, secondary, cfg)
            if taken is not None:
                return taken
            if self.ds.get(self.keys.sticky(sticky_key)) is None:
                sticky_ops = [Create(self.keys.sticky(sticky_key), b"")]  # value filled in once the IP is known
                sticky_owned = True

        def in_pools(cidr: str) -> bool:
            net = ipaddress.ip_network(cidr)
            return any(net.subnet_of(p.cidr) for p in pools if p.cidr.version == net.version)  # type: ignore[arg-type]

        confirmed = self.affinities(node)
        self.cache.set_node_blocks(self.keys.node_affinities(node),
                                   tuple((cidr, akv.key, akv.mod_revision) for akv, cidr in confirmed))
        for _, cidr in confirmed:
            if not in_pools(cidr):
                continue
            raw = self._read_block_raw(cidr)
            if raw is None:
                # Crash between affinity and block: recreate the block (Calico does the same).
                _log.warning("affine block missing; recreating node=%s cidr=%s", node, cidr)
                self.ds.create(self.keys.block(cidr), Block.new(cidr, host_affinity(node)).to_json())
                return None
            kv, block = raw
            if block is None or block.affinity != host_affinity(node):
                continue  # malformed blocks are left for the operator (``ipam check``), not overwritten
            ip = self._commit_allocation(kv, block, handle_id, secondary, sticky_key, sticky_ops, sticky_owned,
                                         reserved)
            if ip is not None:
                return ip

        self.release_expired_holds()
        if cfg.auto_allocate_blocks and len(confirmed) < cfg.max_blocks_per_host and \
                self._claim_free_block(node, pools, reserved) is not None:
            return None
        if not cfg.strict_affinity:
            ip = self._borrow(node, handle_id, secondary, pools, sticky_key, sticky_ops, sticky_owned, reserved)
            if ip is not None:
                return ip
        why = "strict affinity is on" if cfg.strict_affinity else "every block of the pools is full"
        raise NoAddresses(f"no address for {handle_id} on node {node!r}: node has {len(confirmed)} of "
                          f"{cfg.max_blocks_per_host} blocks, no free block to claim, and {why}")

    def _commit_allocation(self, kv: KeyValue, block: Block, handle_id: str, secondary: dict[str, Any],
                           sticky_key: str | None, sticky_ops: list[Op], sticky_owned: bool,
                           reserved: Reservations) -> str | None:
        ip = block.allocate(handle_id, secondary, reserved.ordinals(block.cidr))
        if ip is None:
            return None
        hkv, handle = self._read_handle(handle_id)
        handle.add(str(block.cidr), 1)
        if sticky_owned:
            handle.sticky = sticky_key
        ops: list[Op] = [Update(kv.key, block.to_json(), kv.mod_revision), *self._handle_ops(hkv, handle)]
        for op in sticky_ops:
            assert isinstance(op, Create)
            ops.append(Create(op.key, json.dumps({"ip": ip, "handle": handle_id, "heldUntil": None}).encode()))
        rev = self.ds.commit(ops)
        self.cache.put_block(kv.key, rev, block)
        self.cache.put_handle(self.keys.handle(handle_id), rev, handle)
        return ip

    def _claim_free_block(self, node: str, pools: Sequence[Pool], reserved: Reservations) -> str | None:
        """Claim the lowest free block of the first pool that has one; None when none is free.

        A block whose every address is reserved is never claimed: it could give no address.
        """
        kvs, _ = self.ds.list(self.keys.blocks)
        existing = {token_cidr(kv.key[len(self.keys.blocks):]) for kv in kvs}
        for pool in pools:
            for net in pool.blocks():
                cidr = str(net)
                if cidr in existing or reserved.covers(net):
                    continue
                if self.claim_block(node, cidr):
                    return cidr
        return None

    def claim_block(self, node: str, cidr: str) -> bool:
        """Claim one block for ``node``: affinity pending -> block created -> affinity confirmed.

        True when the node now owns the block; False when another node got it first
        (our pending affinity is then removed again).
        """
        akey = self.keys.affinity(node, cidr)
        try:
            self.ds.create(akey, _affinity_value(AFFINITY_PENDING))
        except Conflict:
            kv = self.ds.get(akey)
            if kv is not None and _affinity_state(kv) == AFFINITY_PENDING_DELETION:
                raise  # being released right now; the caller retries from scratch
        bkey = self.keys.block(cidr)
        try:
            self.ds.create(bkey, Block.new(cidr, host_affinity(node)).to_json())
        except Conflict:
            got = self._read_block(cidr)
            if got is None or got[1].affinity != host_affinity(node):
                akv = self.ds.get(akey)
                if akv is not None and _affinity_state(akv) == AFFINITY_PENDING:
                    self.ds.commit([Delete(akey, akv.mod_revision)])
                _log.info("lost block claim race node=%s cidr=%s", node, cidr)
                return False
        akv = self.ds.get(akey)
        if akv is None:
            raise Conflict(f"affinity {akey} vanished while claiming")
        if _affinity_state(akv) != AFFINITY_CONFIRMED:
            self.ds.commit([Update(akey, _affinity_value(AFFINITY_CONFIRMED), akv.mod_revision)])
        _log.info("claimed block node=%s cidr=%s", node, cidr)
        return True

    def _borrow(self, node: str, handle_id: str, secondary: dict[str, Any], pools: Sequence[Pool],
                sticky_key: str | None, sticky_ops: list[Op], sticky_owned: bool,
                reserved: Reservations) -> str | None:
        kvs, _ = self.ds.list(self.keys.blocks)
        candidates = []
        for kv in kvs:
            try:
                block = Block.from_json(kv.value, kv.key)
            except ValidationError as exc:
                _log.warning("skipping malformed block %s", exc)
                continue
            if block.node == node or not block.unallocated:
                continue
            if any(block.cidr.version == p.cidr.version and block.cidr.subnet_of(p.cidr)  # type: ignore[arg-type]
                   for p in pools):
                candidates.append((kv, block))
        # Calico shuffles with a seed from the host name: spreads borrowers, deterministic per node.
        random.Random(node).shuffle(candidates)
        for kv, block in candidates:
            ip = self._commit_allocation(kv, block, handle_id, secondary, sticky_key, sticky_ops, sticky_owned,
                                         reserved)
            if ip is not None:
                _log.info("borrowed address node=%s ip=%s block=%s owner=%s", node, ip, block.cidr, block.node)
                return ip
        return None

    def assign(self, ip: str, handle_id: str, node: str, attrs: dict[str, Any] | None = None) -> str:
        """Give exactly ``ip`` to ``handle_id``; AddressUnavailable when outside every enabled pool or taken."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise AddressUnavailable(f"{ip!r} is not an IP address") from None
        pools = [p for p in self.pools() if addr in p.cidr and not p.disabled]
        if not pools:
            raise AddressUnavailable(f"{addr} is outside every enabled IP pool")
        pool = pools[0]
        cidr = str(pool.block_of(str(addr)))
        secondary = {**(attrs or {}), "node": node}
        # First attempt: assume a new handle (an ADD's usual case) and, for an unclaimed block, claim it with
        # the address in it; a Conflict (the handle or block exists, a race) falls back to reading them.
        optimistic = True
        for _ in range(RETRIES):
            try:
                raw = self._read_block_raw(cidr)
                if raw is None:
                    if optimistic and self._claim_with_address(node, cidr, str(addr), handle_id, secondary):
                        _log.info("assigned static handle=%s node=%s ip=%s (block claimed)", handle_id, node, addr)
                        return str(addr)
                    optimistic = False
                    # Calico claims the block for the requesting host, whatever its block count.
                    self.claim_block(node, cidr)
                    continue
                kv, block = raw
                if block is None:
                    raise AddressUnavailable(f"{addr}: its block {kv.key} is malformed in the datastore "
                                             "(see ipam check)")
                ordinal = block.ordinal(str(addr))
                if block.handle_of(ordinal) == handle_id:
                    return str(addr)
                try:
                    block.allocate_ip(str(addr), handle_id, secondary)
                except ValueError as exc:
                    raise AddressUnavailable(str(exc)) from None
                hkv, handle = (None, Handle(handle_id)) if optimistic else self._read_handle(handle_id)
                optimistic = False
                handle.add(cidr, 1)
                self.ds.commit([Update(kv.key, block.to_json(), kv.mod_revision), *self._handle_ops(hkv, handle)])
                _log.info("assigned static handle=%s node=%s ip=%s", handle_id, node, addr)
                return str(addr)
            except Conflict:
                optimistic = False
                continue
        raise RetriesExhausted(f"gave up assigning {addr} after {RETRIES} CAS conflicts")

    def _claim_with_address(self, node: str, cidr: str, ip: str, handle_id: str, secondary: dict[str, Any]) -> bool:
        """Claim the unclaimed block ``cidr`` for ``node`` with ``ip`` already given to a new ``handle_id``: the
        confirmed affinity, the block and the handle in one transaction, so one write instead of four and no
        intermediate state to recover (etcd commits all or nothing; the pending -> block -> confirmed dance
        of :meth:`claim_block` exists for stores without multi-key transactions). False, changing nothing,
        when any of the three keys exists (another claimer, a block being released, a handle already held):
        the caller then takes the step-by-step path, which sorts out each case.
        """
        block = Block.new(cidr, host_affinity(node))
        try:
            block.allocate_ip(ip, handle_id, secondary)
        except ValueError as exc:
            raise AddressUnavailable(str(exc)) from None
        handle = Handle(handle_id)
        handle.add(cidr, 1)
        try:
            self.ds.commit([Create(self.keys.affinity(node, cidr), _affinity_value(AFFINITY_CONFIRMED)),
                            Create(self.keys.block(cidr), block.to_json()),
                            Create(self.keys.handle(handle_id), handle.to_json())])
        except Conflict:
            return False
        _log.info("claimed block node=%s cidr=%s (with its first address, one txn)", node, cidr)
        return True

    # -- sticky addresses -----------------------------------------------------
    def _sticky_hold(self, cfg: IPAMConfig) -> float:
        return self._sticky_hold_override if self._sticky_hold_override is not None else cfg.sticky_hold_seconds

    def _take_sticky(self, sticky_key: str, handle_id: str, node: str, secondary: dict[str, Any],
                     cfg: IPAMConfig) -> str | None:
        """Give the held address of ``sticky_key`` to ``handle_id``, if it is held and the hold is live."""
        skey = self.keys.sticky(sticky_key)
        skv = self.ds.get(skey)
        if skv is None:
            return None
        try:
            rec = json.loads(skv.value)
            ip, holder, until = rec["ip"], rec["handle"], rec.get("heldUntil")
        except (ValueError, KeyError, TypeError):
            _log.warning("malformed sticky record key=%s; dropping it", skey)
            self.ds.commit([Delete(skey, skv.mod_revision)])
            return None
        if until is None:
            if holder != handle_id:
                _log.warning("sticky key in use by another workload key=%s holder=%s", sticky_key, holder)
            return None
        if self.clock() > float(until):
            self._release_hold(skv, sticky_key, ip, holder)
            return None
        cidr = self._block_cidr_of(ip)
        got = self._read_block(cidr) if cidr else None
        if got is None:
            self.ds.commit([Delete(skey, skv.mod_revision)])
            return None
        kv, block = got
        ordinal = block.ordinal(ip)
        if block.handle_of(ordinal) != holder:
            self.ds.commit([Delete(skey, skv.mod_revision)])
            return None
        block.reassign([ordinal], handle_id, secondary)
        hold_kv, hold = self._read_handle(holder)
        hold.add(cidr, -1)
        hkv, handle = self._read_handle(handle_id)
        handle.add(cidr, 1)
        handle.sticky = sticky_key
        self.ds.commit([Update(kv.key, block.to_json(), kv.mod_revision), *self._handle_ops(hold_kv, hold),
                        *self._handle_ops(hkv, handle),
                        Update(skey, json.dumps({"ip": ip, "handle": handle_id, "heldUntil": None}).encode(),
                               skv.mod_revision)])
        _log.info("sticky address reused key=%s handle=%s ip=%s", sticky_key, handle_id, ip)
        return ip

    def _release_hold(self, skv: KeyValue, sticky_key: str, ip: str, holder: str) -> None:
        cidr = self._block_cidr_of(ip)
        ops: list[Op] = [Delete(skv.key, skv.mod_revision)]
        got = self._read_block(cidr) if cidr else None
        if got is not None:
            kv, block = got
            ordinal = block.ordinal(ip)
            if block.handle_of(ordinal) == holder:
                block.release_ordinals([ordinal])
                ops.append(Update(kv.key, block.to_json(), kv.mod_revision))
        hkv, _ = self._read_handle(holder)
        if hkv is not None:
            ops.append(Delete(hkv.key, hkv.mod_revision))
        self.ds.commit(ops)
        _log.info("sticky hold expired key=%s ip=%s", sticky_key, ip)
        if got is not None:
            self._maybe_release_empty_block(str(got[1].cidr))

    def release_expired_holds(self) -> list[str]:
        """Free every sticky address whose hold time has passed; returns their addresses."""
        kvs, _ = self.ds.list(self.keys.sticky_dir)
        freed = []
        now = self.clock()
        for skv in kvs:
            try:
                rec = json.loads(skv.value)
                until = rec.get("heldUntil")
                if until is None or now <= float(until):
                    continue
                key = skv.key[len(self.keys.sticky_dir):]
                self._release_hold(skv, key, rec["ip"], rec["handle"])
                freed.append(rec["ip"])
            except Conflict:
                continue
            except (ValueError, KeyError, TypeError, AttributeError):
                _log.warning("malformed sticky record key=%s", skv.key)
        return freed

    def _block_cidr_of(self, ip: str) -> str | None:
        addr = ipaddress.ip_address(ip)
        for p in self.pools():
            if addr in p.cidr:
                return str(p.block_of(ip))
        kvs, _ = self.ds.list(self.keys.blocks)
        for kv in kvs:
            cidr = token_cidr(kv.key[len(self.keys.blocks):])
            if addr in ipaddress.ip_network(cidr):
                return cidr
        return None

    # -- release --------------------------------------------------------------
    def release_handle(self, handle_id: str) -> list[str]:
        """Release every address of ``handle_id``; idempotent (an unknown handle releases nothing).

        A handle bound to a sticky key keeps its address on hold for the sticky hold time.
        """
        fast = self._fast_release(handle_id)
        return fast if fast is not None else self._release_handle_read(handle_id)

    def _release_handle_read(self, handle_id: str) -> list[str]:
        """:meth:`release_handle` from what the store holds now (re-read on every lost CAS)."""
        for _ in range(RETRIES):
            hkv, handle = self._read_handle(handle_id)
            if hkv is None:
                return []
            skv, sticky_ip, hold_for = self._sticky_of(handle)
            ops: list[Op] = []
            released: list[str] = []
            touched: list[str] = []
            written: list[tuple[str, Block]] = []
            held: str | None = None
            hold_handle = sticky_hold_handle(handle.sticky) if sticky_ip and handle.sticky else ""
            hold = Handle(hold_handle, sticky=handle.sticky)
            until = self.clock() + hold_for
            for cidr in list(handle.blocks):
                got = self._read_block(cidr)
                if got is None:
                    continue
                kv, block = got
                ordinals = [o for o in range(len(block.allocations)) if block.handle_of(o) == handle_id]
                if not ordinals:
                    continue
                released += [block.ip(o) for o in ordinals]
                keep = [o for o in ordinals if block.ip(o) == sticky_ip]
                free = [o for o in ordinals if o not in keep]
                if keep:
                    block.reassign(keep, hold_handle, {"stickyKey": handle.sticky, "heldUntil": until})
                    hold.add(cidr, len(keep))
                    held = sticky_ip
                if free:
                    block.release_ordinals(free)
                    touched.append(cidr)
                ops.append(Update(kv.key, block.to_json(), kv.mod_revision))
                written.append((kv.key, block))
            ops.append(Delete(hkv.key, hkv.mod_revision))
            holding = held is not None
            if holding and skv is not None:
                ops.append(Put(self.keys.handle(hold_handle), hold.to_json()))
                ops.append(Update(skv.key, json.dumps({"ip": held, "handle": hold_handle,
                                                       "heldUntil": until}).encode(), skv.mod_revision))
            elif skv is not None and handle.sticky:
                ops.append(Delete(skv.key, skv.mod_revision))
            try:
                rev = self.ds.commit(ops)
            except Conflict:
                continue
            self.cache.drop_handle(hkv.key)
            for key, block in written:
                self.cache.put_block(key, rev, block)
            _log.info("released handle=%s ips=%s held=%s", handle_id, ",".join(released), holding)
            for cidr in touched:
                self._maybe_release_empty_block(cidr)
            return released
        raise RetriesExhausted(f"gave up releasing {handle_id} after {RETRIES} CAS conflicts")

    def _sticky_of(self, handle: Handle) -> tuple[KeyValue | None, str | None, float]:
        """The handle's sticky record, the one address it names for this handle (only it is held; None when
        there is nothing to hold) and the hold time. No read for a handle without a sticky key."""
        if not handle.sticky:
            return None, None, 0.0
        hold_for = self._sticky_hold(self.config())
        skv = self.ds.get(self.keys.sticky(handle.sticky))
        if skv is None or hold_for <= 0:
            return skv, None, hold_for
        try:
            rec = json.loads(skv.value)
        except ValueError:
            return skv, None, hold_for
        ip = rec.get("ip") if isinstance(rec, dict) and rec.get("handle") == handle.handle_id else None
        return skv, ip if isinstance(ip, str) else None, hold_for

    def _fast_release(self, handle_id: str) -> list[str] | None:
        """Release a handle this cache wrote, from its cached blocks, in one transaction and no read.

        The transaction deletes the handle on its cached revision and updates each block on its own, so it
        goes through only if nothing changed since; else (Conflict) nothing is written, the entries are
        dropped and the reading path runs. None (nothing written) when the handle or a block is not cached,
        or the handle is sticky (the hold needs the config and the sticky record).
        """
        hkey = self.keys.handle(handle_id)
        entry = self.cache.take_handle(hkey)
        if entry is None:
            return None
        hrev, handle = entry
        taken: list[tuple[str, int, Block]] = []
        ok = not handle.sticky and bool(handle.blocks)
        for cidr in handle.blocks if ok else ():
            bkey = self.keys.block(cidr)
            got = self.cache.take_block(bkey)
            if got is None:
                ok = False
                break
            taken.append((bkey, *got))
        plan = [(bkey, rev, block, [o for o, a in enumerate(block.allocations)
                                    if a is not None and block.handle_of(o) == handle_id])
                for bkey, rev, block in taken]
        if not ok or any(not ordinals for *_, ordinals in plan):
            for bkey, rev, block in taken:  # unchanged: put back
                self.cache.put_block(bkey, rev, block)
            return None
        released: list[str] = []
        ops: list[Op] = []
        for bkey, rev, block, ordinals in plan:
            released += [block.ip(o) for o in ordinals]
            block.release_ordinals(ordinals)
            ops.append(Update(bkey, block.to_json(), rev))
        ops.append(Delete(hkey, hrev))
        try:
            new_rev = self.ds.commit(ops)
        except Conflict:
            _log.debug("IPAM cached handle or block stale; reading handle=%s", handle_id)
            return None
        for bkey, _, block, _ in plan:
            self.cache.put_block(bkey, new_rev, block)
        _log.info("released handle=%s ips=%s held=%s", handle_id, ",".join(released), False)
        for _, _, block, _ in plan:
            if block.is_empty():
                self._maybe_release_empty_block(str(block.cidr))
        return released

    def release_ips(self, ips: Iterable[str]) -> list[str]:
        """Release single addresses whatever handle holds them (``ipam release --ip``). Returns what was freed."""
        freed = []
        for ip in ips:
            cidr = self._block_cidr_of(ip)
            for _ in range(RETRIES):
                got = self._read_block(cidr) if cidr else None
                if got is None:
                    break
                kv, block = got
                ordinal = block.ordinal(ip)
                holder = block.handle_of(ordinal)
                if holder is None:
                    break
                block.release_ordinals([ordinal])
                hkv, handle = self._read_handle(holder)
                ops: list[Op] = [Update(kv.key, block.to_json(), kv.mod_revision)]
                if hkv is not None:
                    handle.add(str(block.cidr), -1)
                    ops += self._handle_ops(hkv, handle)
                try:
                    self.ds.commit(ops)
                except Conflict:
                    continue
                freed.append(ip)
                self._maybe_release_empty_block(str(block.cidr))
                break
        return freed

    def _maybe_release_empty_block(self, cidr: str) -> bool:
        """Delete an empty block (with its affinity, in one txn), keeping a node's last block as Calico does."""
        try:
            got = self._read_block(cidr)
            if got is None or not got[1].is_empty():
                return False
            kv, block = got
            node = block.node
            if node is None:
                self.ds.commit([Delete(kv.key, kv.mod_revision)])
                return True
            mine = self.affinities(node)
            if len(mine) <= 1:
                return False
            akv = next((a for a, c in mine if c == cidr), None)
            ops: list[Op] = [Delete(kv.key, kv.mod_revision)]
            if akv is not None:
                ops.append(Delete(akv.key, akv.mod_revision))
            self.ds.commit(ops)
            self.cache.drop_block(kv.key)
            _log.info("released empty block node=%s cidr=%s", node, cidr)
            return True
        except Conflict:
            return False  # someone allocated from it meanwhile: keep it

    def release_node(self, node: str) -> list[str]:
        """Drop every affinity of a deleted node; empty blocks go, blocks still in use become unaffine."""
        released = []
        for _ in range(RETRIES):
            pending = self.affinities(node, state=None)
            if not pending:
                return released
            try:
                for akv, cidr in pending:
                    got = self._read_block(cidr)
                    ops: list[Op] = [Delete(akv.key, akv.mod_revision)]
                    if got is not None and got[1].affinity == host_affinity(node):
                        kv, block = got
                        if block.is_empty():
                            ops.append(Delete(kv.key, kv.mod_revision))
                        else:
                            block.affinity = None
                            ops.append(Update(kv.key, block.to_json(), kv.mod_revision))
                    self.ds.commit(ops)
                    released.append(cidr)
                    _log.info("released node affinity node=%s cidr=%s", node, cidr)
            except Conflict:
                continue
        raise RetriesExhausted(f"gave up releasing node {node} after {RETRIES} CAS conflicts")

    # -- inspection -----------------------------------------------------------
    def blocks(self) -> list[Block]:
        kvs, _ = self.ds.list(self.keys.blocks)
        out = []
        for kv in kvs:
            try:
                out.append(Block.from_json(kv.value, kv.key))
            except ValidationError as exc:
                _log.warning("skipping malformed block %s", exc)
        return out

    def check(self) -> IPAMReport:
        """A consistency report: leaks, double allocations, orphaned affinities, borrowed addresses."""
        return build_report(self.ds, self.keys, self.pools(), self.clock())
