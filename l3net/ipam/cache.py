"""l3net.ipam.cache: what one IPAM client last read or wrote of its blocks, handles and pools, with revisions.

The allocator's fast path acts on these entries without reading the store: an ADD writes
the cached block with a compare on its cached ``mod_revision`` and creates the handle, a DEL
updates the cached blocks and deletes the cached handle on its revision, and every other
cached read the choice rests on (the pool, the node and namespace labels the pool selects
by, the block's affinity, the reservations) rides along as a :class:`~l3net.datastore.base.Check`
in the same transaction. A stale entry therefore makes that commit fail, changing nothing;
the allocator drops the entry and takes the reading path. A stale cache costs one round
trip, never a wrong write.

One cache belongs to one datastore (one etcd cluster): revisions of another store mean
nothing here. The allocator fills it from the reading path and from its own commits.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from l3net.datastore.base import Check, CheckPrefix, Op
from l3net.ipam.block import Block, IPNetwork
from l3net.ipam.handle import Handle
from l3net.ipam.pools import Pool
from l3net.ipam.reservations import Reservations

__all__ = ["AllocContext", "IPAMCache"]

MAX_ENTRIES = 4096

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class AllocContext:
    """The eligible pools for one (node, requested pools, namespace) and the reservations, as read.

    Each pool carries the checks its eligibility rests on (its own key, and the node's or
    namespace's key when its selector reads their labels). Immutable.
    """

    pools: tuple[tuple[Pool, tuple[Check, ...]], ...]
    reserved: Reservations
    reserved_checks: tuple[Check | CheckPrefix, ...]

    def guards_for(self, cidr: IPNetwork) -> tuple[Op, ...] | None:
        """The checks under which a block ``cidr`` may be allocated from; None when no eligible pool holds it."""
        for pool, checks in self.pools:
            if cidr.version == pool.cidr.version and cidr.subnet_of(pool.cidr):  # type: ignore[arg-type]
                return (*checks, *self.reserved_checks)
        return None


class _Bounded(Generic[K, V]):
    """An insertion-ordered map that forgets its oldest entry beyond ``limit``. Not locked: IPAMCache locks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: OrderedDict[K, V] = OrderedDict()

    def put(self, key: K, value: V) -> None:
        self.items.pop(key, None)
        self.items[key] = value
        while len(self.items) > self.limit:
            self.items.popitem(last=False)


class IPAMCache:
    """Blocks, handles, a node's affine blocks and allocation contexts, each as last read or written.

    Owns no datastore key and writes nothing. Thread-safe: an entry is *taken* (removed) while
    a caller builds a write on it and put back with the revision that write produced, so two
    threads never build on one entry (the second finds nothing and reads the store). Bounded:
    each map forgets its oldest entries beyond ``max_entries``.
    """

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._lock = threading.Lock()
        self._blocks: _Bounded[str, tuple[int, Block]] = _Bounded(max_entries)
        self._handles: _Bounded[str, tuple[int, Handle]] = _Bounded(max_entries)
        self._node_blocks: _Bounded[str, tuple[tuple[str, str, int], ...]] = _Bounded(max_entries)
        self._contexts: _Bounded[Hashable, AllocContext] = _Bounded(max_entries)

    # -- blocks (by block key) -------------------------------------------------------
    def take_block(self, key: str) -> tuple[int, Block] | None:
        with self._lock:
            return self._blocks.items.pop(key, None)

    def put_block(self, key: str, mod_revision: int, block: Block) -> None:
        with self._lock:
            self._blocks.put(key, (mod_revision, block))

    def drop_block(self, key: str) -> None:
        with self._lock:
            self._blocks.items.pop(key, None)

    # -- handles (by handle key) -----------------------------------------------------
    def take_handle(self, key: str) -> tuple[int, Handle] | None:
        with self._lock:
            return self._handles.items.pop(key, None)

    def put_handle(self, key: str, mod_revision: int, handle: Handle) -> None:
        with self._lock:
            self._handles.put(key, (mod_revision, handle))

    def drop_handle(self, key: str) -> None:
        with self._lock:
            self._handles.items.pop(key, None)

    # -- a node's confirmed affine blocks (by the node's affinity prefix) ------------
    def node_blocks(self, prefix: str) -> tuple[tuple[str, str, int], ...]:
        """``(cidr, affinity key, affinity mod_revision)`` of the node's confirmed blocks, lowest first; () unknown."""
        with self._lock:
            return self._node_blocks.items.get(prefix, ())

    def set_node_blocks(self, prefix: str, blocks: tuple[tuple[str, str, int], ...]) -> None:
        with self._lock:
            self._node_blocks.put(prefix, blocks)

    def drop_node_blocks(self, prefix: str) -> None:
        with self._lock:
            self._node_blocks.items.pop(prefix, None)

    # -- allocation contexts ---------------------------------------------------------
    def context(self, key: Hashable) -> AllocContext | None:
        with self._lock:
            return self._contexts.items.get(key)

    def set_context(self, key: Hashable, ctx: AllocContext) -> None:
        with self._lock:
            self._contexts.put(key, ctx)

    def drop_context(self, key: Hashable) -> None:
        with self._lock:
            self._contexts.items.pop(key, None)
