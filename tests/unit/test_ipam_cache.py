"""Unit tests of the IPAM's cached fast path: one write and no read in steady state, and a stale cache
costs one failed commit (then a read), never a wrong write."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

import pytest

from l3net.datastore.base import Check, CheckPrefix, Create, KeyValue, Op, Update
from l3net.datastore.memory import MemoryDatastore
from l3net.errors import Conflict
from l3net.ipam import IPAM
from l3net.ipam.cache import IPAMCache
from tests.unit.ipam_builders import KEYS, add_node, add_pool, block_of, consistent

pytestmark = pytest.mark.unit


class Counting(MemoryDatastore):
    """Counts reads (get, list) and commits, and the commits refused with Conflict."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = self.commits = self.conflicts = 0

    def get(self, key: str) -> KeyValue | None:
        self.reads += 1
        return super().get(key)

    def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        self.reads += 1
        return super().list(prefix)

    def commit(self, ops: Sequence[Op]) -> int:
        self.commits += 1
        try:
            return super().commit(ops)
        except Conflict:
            self.conflicts += 1
            raise

    def counts(self) -> tuple[int, int, int]:
        return self.reads, self.commits, self.conflicts


@pytest.fixture
def ds() -> Counting:
    store = Counting()
    add_node(store, "a")
    add_node(store, "b")
    add_pool(store, "p", "10.5.0.0/24")
    return store


def delta(ds: Counting, before: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(now - was for now, was in zip(ds.counts(), before, strict=True))  # type: ignore[return-value]


def test_warm_add_and_del_are_one_commit_and_no_read(ds: Counting) -> None:
    ipam = IPAM(ds, KEYS)
    ipam.auto_assign("net.first", "a", {})  # cold: reads pools, affinities, claims a block
    before = ds.counts()
    assert ipam.auto_assign("net.second", "a", {}) == ["10.5.0.1"]
    assert delta(ds, before) == (0, 1, 0)
    before = ds.counts()
    assert ipam.release_handle("net.second") == ["10.5.0.1"]
    assert delta(ds, before) == (0, 1, 0)
    assert ds.get(KEYS.handle("net.second")) is None
    assert block_of(ds, "10.5.0.0/26").ips_of("net.second") == []
    assert consistent(ipam)


def test_stale_block_costs_one_failed_commit_and_never_a_double_allocation(ds: Counting) -> None:
    ipam = IPAM(ds, KEYS)
    other = IPAM(ds, KEYS)  # another process on the same node: its own cache
    ipam.auto_assign("net.first", "a", {})
    other.auto_assign("net.other", "a", {})  # the block moved on: ipam's cached revision is stale
    before = ds.counts()
    mine = ipam.auto_assign("net.mine", "a", {})
    reads, commits, conflicts = delta(ds, before)
    assert (commits, conflicts) == (2, 1) and reads > 0
    assert mine != other.handle_ips("net.other")
    assert consistent(ipam)
    before = ds.counts()
    ipam.auto_assign("net.again", "a", {})  # the read refreshed the cache
    assert delta(ds, before) == (0, 1, 0)


def test_retried_add_with_a_cached_block_returns_the_same_address(ds: Counting) -> None:
    ipam = IPAM(ds, KEYS)
    first = ipam.auto_assign("net.x", "a", {})
    assert ipam.auto_assign("net.x", "a", {}) == first  # the handle exists: the fast commit fails, then reads
    assert block_of(ds, "10.5.0.0/26").ips_of("net.x") == first
    assert consistent(ipam)


def test_stale_handle_on_del_reads_and_releases_what_the_store_holds(ds: Counting) -> None:
    ipam = IPAM(ds, KEYS)
    ipam.auto_assign("net.x", "a", {})
    ipam.auto_assign("net.y", "a", {})
    IPAM(ds, KEYS).release_handle("net.x")  # released elsewhere, then the same handle added again elsewhere
    again = IPAM(ds, KEYS).auto_assign("net.x", "a", {})
    assert ipam.release_handle("net.x") == again
    assert ds.get(KEYS.handle("net.x")) is None
    assert ipam.release_handle("net.x") == []
    assert consistent(ipam)


def test_disabled_pool_is_not_used_from_the_cache(ds: Counting) -> None:
    add_pool(ds, "q", "10.6.0.0/24")
    ipam = IPAM(ds, KEYS)
    assert ipam.auto_assign("net.1", "a", {})[0].startswith("10.5.")
    add_pool(ds, "p", "10.5.0.0/24", disabled=True)
    add_pool(ds, "q", "10.6.0.0/24")
    got = ipam.auto_assign("net.2", "a", {})
    assert got[0].startswith("10.6.")
    assert consistent(ipam)


def test_node_label_change_is_noticed_when_the_pool_selects_by_label(ds: Counting) -> None:
    add_node(ds, "a", {"zone": "x"})
    add_pool(ds, "p", "10.5.0.0/24", nodeSelector="zone == 'x'")
    add_pool(ds, "q", "10.6.0.0/24", nodeSelector="zone == 'y'")
    ipam = IPAM(ds, KEYS)
    assert ipam.auto_assign("net.1", "a", {})[0].startswith("10.5.")
    add_node(ds, "a", {"zone": "y"})
    assert ipam.auto_assign("net.2", "a", {})[0].startswith("10.6.")


def test_new_reservation_is_respected_by_the_cached_path(ds: Counting) -> None:
    ipam = IPAM(ds, KEYS)
    assert ipam.auto_assign("net.1", "a", {}) == ["10.5.0.0"]
    doc = {"apiVersion": "l3net.io/v1", "kind": "IPReservation", "metadata": {"name": "r"},
           "spec": {"reservedCIDRs": ["10.5.0.1/32", "10.5.0.2/32"]}}
    ds.put(KEYS.resource("ipreservations", "r"), json.dumps(doc).encode())
    assert ipam.auto_assign("net.2", "a", {}) == ["10.5.0.3"]


def test_dropped_reservation_frees_its_addresses_for_the_cached_path(ds: Counting) -> None:
    doc = {"apiVersion": "l3net.io/v1", "kind": "IPReservation", "metadata": {"name": "r"},
           "spec": {"reservedCIDRs": ["10.5.0.1/32"]}}
    ds.put(KEYS.resource("ipreservations", "r"), json.dumps(doc).encode())
    ipam = IPAM(ds, KEYS)
    assert ipam.auto_assign("net.1", "a", {}) == ["10.5.0.0"]
    ds.delete(KEYS.resource("ipreservations", "r"))
    assert ipam.auto_assign("net.2", "a", {}) == ["10.5.0.1"]


def test_two_allocators_racing_on_one_block_never_double_allocate() -> None:
    ds = MemoryDatastore()
    add_node(ds, "a")
    add_node(ds, "b")
    add_pool(ds, "p", "10.5.0.0/24")
    shared = IPAMCache()
    allocators = [IPAM(ds, KEYS), IPAM(ds, KEYS), IPAM(ds, KEYS, cache=shared), IPAM(ds, KEYS, cache=shared)]
    for i, ipam in enumerate(allocators):
        ipam.auto_assign(f"warm.{i}", "a", {})  # every cache warm on the same block
    got: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def work(n: int, ipam: IPAM) -> None:
        try:
            for j in range(40):
                h = f"net.{n}.{j}"
                got[h] = ipam.auto_assign(h, "a", {})
                if j % 3 == 0:
                    ipam.release_handle(h)
                    del got[h]
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n, ipam)) for n, ipam in enumerate(allocators)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ips = [ip for v in got.values() for ip in v]
    assert len(ips) == len(set(ips))
    for h, v in got.items():
        assert allocators[0].handle_ips(h) == v
    assert consistent(allocators[0])


def test_memory_store_checks_refuse_a_stale_read() -> None:
    ds = MemoryDatastore()
    rev = ds.put("/k", b"1")
    ds.commit([Check("/k", rev), Check("/absent", 0), CheckPrefix("/p/", ds.revision()), Create("/n", b"")])
    ds.put("/p/x", b"2")
    with pytest.raises(Conflict):
        ds.commit([CheckPrefix("/p/", rev), Update("/k", b"3", rev)])
    with pytest.raises(Conflict):
        ds.commit([Check("/absent-not", 0), Check("/n", 0)])
    kv = ds.get("/k")
    assert kv is not None and kv.value == b"1" and ds.get("/absent") is None
