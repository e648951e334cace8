"""Unit tests of the block-affinity IPAM against MemoryDatastore (races simulated by interleaving)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Sequence

import pytest

from l3net.datastore.base import Create, Op
from l3net.datastore.memory import MemoryDatastore
from l3net.errors import Conflict
from l3net.ipam import IPAM, AddressUnavailable, NoAddresses
from l3net.ipam.allocator import RetriesExhausted
from tests.unit.ipam_builders import KEYS, add_node, add_pool, block_of, consistent

pytestmark = pytest.mark.unit



def add_wep(ds: MemoryDatastore, name: str, ip: str, cid: str = "") -> None:
    doc = {"apiVersion": "l3net.io/v1", "kind": "WorkloadEndpoint", "metadata": {"name": name, "namespace": "d"},
           "spec": {"node": "a", "ipNetworks": [f"{ip}/32"], "containerID": cid}}
    ds.put(KEYS.resource("workloadendpoints", name, "d"), json.dumps(doc).encode())


@pytest.fixture
def ds() -> MemoryDatastore:
    store = MemoryDatastore()
    add_node(store, "a")
    add_node(store, "b")
    return store


def test_nodes_claim_blocks_in_order_and_allocate_from_their_own(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.0.0.0/24")
    ipam = IPAM(ds, KEYS)
    a1 = ipam.auto_assign("net.a1", "a", {})
    b1 = ipam.auto_assign("net.b1", "b", {})
    a2 = ipam.auto_assign("net.a2", "a", {})
    assert a1 == ["10.0.0.0"] and a2 == ["10.0.0.1"]
    assert b1 == ["10.0.0.64"]
    assert block_of(ds, "10.0.0.0/26").affinity == "host:a"
    assert [c for _, c in ipam.affinities("b")] == ["10.0.0.64/26"]
    assert consistent(ipam)
    assert not ipam.check().ok  # three allocations and no WorkloadEndpoint: leaks


def test_full_block_claims_next_and_retried_add_returns_same_address(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.1.0.0/24", block_size=30)
    ipam = IPAM(ds, KEYS)
    ips = [ipam.auto_assign(f"net.c{i}", "a", {})[0] for i in range(6)]
    assert len(set(ips)) == 6
    assert [c for _, c in ipam.affinities("a")] == ["10.1.0.0/30", "10.1.0.4/30"]
    assert ipam.auto_assign("net.c3", "a", {}) == [ips[3]]
    assert ipam.release_handle("net.c3") == [ips[3]]
    assert ipam.release_handle("net.c3") == []


def test_borrowing_when_at_block_limit_and_strict_affinity_refuses(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.2.0.0/28", block_size=30)  # 4 blocks of 4
    ipam = IPAM(ds, KEYS)
    ipam.set_config(maxBlocksPerHost=1)
    b_ips = [ipam.auto_assign(f"net.b{i}", "b", {})[0] for i in range(2)]
    a_ips = [ipam.auto_assign(f"net.a{i}", "a", {})[0] for i in range(4)]
    borrowed = ipam.auto_assign("net.a4", "a", {})[0]
    assert ipaddress.ip_address(borrowed) not in ipaddress.ip_network("10.2.0.4/30")  # a's own block
    report = ipam.check()
    assert [x.ip for x in report.borrowed] == [borrowed] and b_ips
    assert len(set(a_ips)) == 4
    ipam.set_config(strictAffinity=True)
    with pytest.raises(NoAddresses, match="strict affinity"):
        ipam.auto_assign("net.a5", "a", {})
    assert ipam.handle_ips("net.a5") == []


def test_pool_exhausted_raises_and_writes_nothing(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.3.0.0/30", block_size=30)
    ipam = IPAM(ds, KEYS)
    for i in range(4):
        ipam.auto_assign(f"net.x{i}", "a", {})
    before = ds.writes
    with pytest.raises(NoAddresses):
        ipam.auto_assign("net.x9", "b", {})
    assert ds.get(KEYS.handle("net.x9")) is None
    assert ds.writes == before


class RacingStore(MemoryDatastore):
    """Runs ``hook`` once, just before the first commit that matches ``when`` (an interleaved writer)."""

    def __init__(self) -> None:
        super().__init__()
        self.hook: Callable[[], None] | None = None
        self.when: Callable[[Sequence[Op]], bool] = lambda ops: False

    def commit(self, ops: Sequence[Op]) -> int:
        if self.hook is not None and self.when(ops):
            hook, self.hook = self.hook, None
            hook()
        return super().commit(ops)


def test_losing_a_block_claim_race_removes_pending_affinity_and_claims_another() -> None:
    ds = RacingStore()
    add_node(ds, "a")
    add_node(ds, "b")
    add_pool(ds, "p", "10.4.0.0/24")
    a, b = IPAM(ds, KEYS), IPAM(ds, KEYS)
    first_block = KEYS.block("10.4.0.0/26")
    ds.when = lambda ops: any(isinstance(o, Create) and o.key == first_block for o in ops)
    ds.hook = lambda: b.auto_assign("net.b", "b", {})  # b claims 10.4.0.0/26 under a's feet
    got = a.auto_assign("net.a", "a", {})
    assert b.handle_ips("net.b") == ["10.4.0.0"]
    assert got == ["10.4.0.64"]
    assert ds.get(KEYS.affinity("a", "10.4.0.0/26")) is None  # pending affinity cleaned up
    assert [c for _, c in a.affinities("a")] == ["10.4.0.64/26"]
    assert consistent(a)


def test_interleaved_allocation_in_same_block_retries_and_gets_distinct_address(ds: MemoryDatastore) -> None:
    store = RacingStore()
    add_node(store, "a")
    add_pool(store, "p", "10.5.0.0/24")
    ipam = IPAM(store, KEYS)
    ipam.auto_assign("net.first", "a", {})
    block_key = KEYS.block("10.5.0.0/26")
    store.when = lambda ops: any(o.key == block_key for o in ops)
    store.hook = lambda: IPAM(store, KEYS).auto_assign("net.other", "a", {})
    mine = ipam.auto_assign("net.mine", "a", {})
    other = ipam.handle_ips("net.other")
    assert sorted(mine + other) == ["10.5.0.1", "10.5.0.2"]
    assert ipam.check().inconsistencies == []


def test_pending_affinity_is_treated_as_absent(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.6.0.0/24")
    ds.create(KEYS.affinity("a", "10.6.0.0/26"), b'{"state": "pending"}')
    ipam = IPAM(ds, KEYS)
    assert ipam.affinities("a") == []
    # a's own stale pending affinity (a crash mid-claim) is adopted by the next claim
    assert ipam.auto_assign("net.a", "a", {}) == ["10.6.0.0"]
    assert [c for _, c in ipam.affinities("a")] == ["10.6.0.0/26"]


def test_static_assign_refuses_outside_pool_and_taken(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.7.0.0/24")
    ipam = IPAM(ds, KEYS)
    assert ipam.assign("10.7.0.9", "net.s", "a", {}) == "10.7.0.9"
    assert ipam.assign("10.7.0.9", "net.s", "a", {}) == "10.7.0.9"  # idempotent
    with pytest.raises(AddressUnavailable, match=r"already in use by handle 'net\.s'"):
        ipam.assign("10.7.0.9", "net.t", "a", {})
    with pytest.raises(AddressUnavailable, match="outside every enabled IP pool"):
        ipam.assign("192.168.0.1", "net.t", "a", {})
    assert ipam.handle_ips("net.t") == []
    assert block_of(ds, "10.7.0.0/26").affinity == "host:a"


class Counting(MemoryDatastore):
    """A MemoryDatastore that also counts reads (its own ``writes`` counts commits: each write is one txn)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().get(key)

    def list(self, prefix: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().list(prefix)

    def counts(self) -> tuple[int, int]:
        out = (self.writes, self.reads)
        self.reads = self.writes = 0
        return out


def test_static_assign_in_a_new_block_claims_it_with_the_address_in_one_write() -> None:
    """Affinity (confirmed), block and handle in one txn; then a new handle in that block: one more write."""
    ds = Counting()
    add_pool(ds, "p", "10.7.0.0/24")
    add_node(ds, "a")
    ipam = IPAM(ds, KEYS)
    ds.counts()
    assert ipam.assign("10.7.0.66", "net.s", "a", {"pod": "p1"}) == "10.7.0.66"
    assert ds.counts() == (1, 2)  # pools, the (absent) block; one write
    kv = ds.get(KEYS.affinity("a", "10.7.0.64/26"))
    assert kv is not None and json.loads(kv.value)["state"] == "confirmed"
    assert block_of(ds, "10.7.0.64/26").affinity == "host:a"
    assert ipam.handle_ips("net.s") == ["10.7.0.66"]
    ds.counts()
    assert ipam.assign("10.7.0.67", "net.t", "a", {}) == "10.7.0.67"
    assert ds.counts() == (1, 2)  # a new handle is created without being read first
    assert ipam.assign("10.7.0.68", "net.t", "a", {}) == "10.7.0.68"  # the handle exists: read, then updated
    assert sorted(ipam.handle_ips("net.t")) == ["10.7.0.67", "10.7.0.68"]
    assert consistent(ipam)


def test_static_assign_falls_back_to_the_stepwise_claim_when_a_key_exists(ds: MemoryDatastore) -> None:
    """A handle that already holds an address elsewhere, or an affinity being released: no one-txn claim, the
    step-by-step path sorts it out (and a refused one-txn claim changed nothing)."""
    add_pool(ds, "p", "10.7.0.0/24")
    add_node(ds, "a")
    ipam = IPAM(ds, KEYS)
    assert ipam.assign("10.7.0.2", "net.s", "a", {}) == "10.7.0.2"
    assert ipam.assign("10.7.0.70", "net.s", "a", {}) == "10.7.0.70"  # the handle exists: the Create refused
    assert sorted(ipam.handle_ips("net.s")) == ["10.7.0.2", "10.7.0.70"]
    assert block_of(ds, "10.7.0.64/26").affinity == "host:a"
    ds.put(KEYS.affinity("b", "10.7.0.128/26"), json.dumps({"state": "pendingDeletion"}).encode())
    with pytest.raises(RetriesExhausted):  # as before: the release must finish first
        ipam.assign("10.7.0.130", "net.u", "b", {})
    assert ds.get(KEYS.block("10.7.0.128/26")) is None and ds.get(KEYS.handle("net.u")) is None
    ds.delete(KEYS.affinity("b", "10.7.0.128/26"))  # the release finished
    assert sorted(ipam.handle_ips("net.s")) == ["10.7.0.2", "10.7.0.70"]
    assert consistent(ipam)


def test_sticky_address_comes_back_within_hold_time_only(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.8.0.0/24")
    now = [1000.0]
    ipam = IPAM(ds, KEYS, clock=lambda: now[0], sticky_hold_seconds=60)
    ip = ipam.auto_assign("net.c1", "a", {}, sticky_key="ns/db-0")[0]
    ipam.auto_assign("net.filler", "a", {})
    assert ipam.release_handle("net.c1") == [ip]
    assert ipam.auto_assign("net.other", "a", {})[0] != ip  # held: nobody else gets it
    assert [a.ip for a in ipam.check().held] == [ip]
    now[0] += 30
    assert ipam.auto_assign("net.c2", "b", {}, sticky_key="ns/db-0") == [ip]
    ipam.release_handle("net.c2")
    now[0] += 61
    assert ipam.check().leaks[0].ip == ip  # expired, not yet collected
    assert ipam.release_expired_holds() == [ip]
    assert ds.get(KEYS.handle("l3net-sticky.ns.db-0")) is None
    fresh = ipam.auto_assign("net.c3", "a", {}, sticky_key="ns/db-0")
    assert fresh == ["10.8.0.3"]  # the freed address went to the tail of the free list
    kv = ds.get(KEYS.sticky("ns/db-0"))
    assert kv is not None and json.loads(kv.value)["ip"] == "10.8.0.3"
    assert consistent(ipam)


def test_empty_blocks_released_but_node_keeps_its_last(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.9.0.0/24", block_size=30)
    ipam = IPAM(ds, KEYS)
    for i in range(6):
        ipam.auto_assign(f"net.e{i}", "a", {})
    assert len(ipam.affinities("a")) == 2
    for i in range(4, 6):
        ipam.release_handle(f"net.e{i}")
    assert [c for _, c in ipam.affinities("a")] == ["10.9.0.0/30"]
    assert ds.get(KEYS.block("10.9.0.4/30")) is None
    for i in range(4):
        ipam.release_handle(f"net.e{i}")
    assert [c for _, c in ipam.affinities("a")] == ["10.9.0.0/30"]
    assert block_of(ds, "10.9.0.0/30").is_empty()


def test_release_node_drops_affinities_and_unaffines_used_blocks(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.10.0.0/24", block_size=30)
    ipam = IPAM(ds, KEYS)
    ipam.auto_assign("net.n1", "a", {})
    ipam.claim_block("a", "10.10.0.8/30")
    assert sorted(ipam.release_node("a")) == ["10.10.0.0/30", "10.10.0.8/30"]
    assert ipam.affinities("a", state=None) == []
    assert ds.get(KEYS.block("10.10.0.8/30")) is None
    assert block_of(ds, "10.10.0.0/30").affinity is None
    assert ipam.release_handle("net.n1") == ["10.10.0.0"]
    assert ds.get(KEYS.block("10.10.0.0/30")) is None


def test_node_selector_restricts_pools(ds: MemoryDatastore) -> None:
    add_node(ds, "a", {"rack": "r1"})
    add_pool(ds, "r2", "10.11.0.0/24", nodeSelector="rack == 'r2'")
    add_pool(ds, "r1", "10.12.0.0/24", nodeSelector="rack == 'r1'")
    ipam = IPAM(ds, KEYS)
    assert ipam.auto_assign("net.s", "a", {}) == ["10.12.0.0"]
    with pytest.raises(NoAddresses, match="no enabled IPv4 pool"):
        ipam.auto_assign("net.t", "a", {}, pools=["r2"])


def test_check_reports_leaks_orphans_and_doubles(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.13.0.0/24")
    ipam = IPAM(ds, KEYS)
    ip = ipam.auto_assign("net.k1", "a", {"containerID": "k1"})[0]
    add_wep(ds, "w1", ip, "k1")
    assert ipam.check().ok
    leaked = ipam.auto_assign("net.k2", "a", {})[0]
    ds.put(KEYS.affinity("ghost", "10.13.0.192/26"), b'{"state": "confirmed"}')
    add_wep(ds, "w2", ip, "k9")
    report = ipam.check()
    assert not report.ok
    assert [a.ip for a in report.leaks] == [leaked]
    assert report.orphaned_affinities and "ghost" in report.orphaned_affinities[0]
    assert report.double_allocations and ip in report.double_allocations[0]
    with pytest.raises(Conflict):
        ds.create(KEYS.handle("net.k1"), b"{}")  # the handle index exists


def test_release_ips_frees_single_address_and_updates_handle(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.14.0.0/24")
    ipam = IPAM(ds, KEYS)
    ips = ipam.auto_assign("net.m", "a", {}, num_v4=2)
    assert ipam.release_ips([ips[0]]) == [ips[0]]
    assert ipam.handle_ips("net.m") == [ips[1]]
    assert ipam.check().inconsistencies == []


def test_sticky_release_holds_only_the_sticky_address_and_frees_the_rest(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.15.0.0/24")
    now = [1000.0]
    ipam = IPAM(ds, KEYS, clock=lambda: now[0], sticky_hold_seconds=60)
    first, second = ipam.auto_assign("net.s2", "a", {}, num_v4=2, sticky_key="ns/db-1")
    skv = ds.get(KEYS.sticky("ns/db-1"))
    assert skv is not None and json.loads(skv.value)["ip"] == first
    assert sorted(ipam.release_handle("net.s2")) == sorted([first, second])
    report = ipam.check()
    assert [a.ip for a in report.held] == [first]
    assert second not in {a.ip for a in report.allocations}  # freed at once, not parked on the hold
    assert block_of(ds, "10.15.0.0/26").handle_of(block_of(ds, "10.15.0.0/26").ordinal(second)) is None
    assert consistent(ipam)
    now[0] += 61
    assert ipam.release_expired_holds() == [first]
    assert ipam.check().allocations == []  # nothing leaks once the hold expires
    assert consistent(ipam)


def put_garbage_block(ds: MemoryDatastore, node: str, cidr: str) -> None:
    ds.put(KEYS.affinity(node, cidr), b'{"state": "confirmed"}')
    ds.put(KEYS.block(cidr), b"not json at all")


def test_malformed_affine_block_is_skipped_not_rewritten_and_check_reports_it(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.16.0.0/24")
    put_garbage_block(ds, "a", "10.16.0.0/26")
    ipam = IPAM(ds, KEYS)
    assert ipam.auto_assign("net.g1", "a", {}) == ["10.16.0.64"]  # claimed the next block instead
    assert ipam.handle_ips("net.g1") == ["10.16.0.64"]
    assert ipam.release_handle("net.g1") == ["10.16.0.64"]
    kv = ds.get(KEYS.block("10.16.0.0/26"))
    assert kv is not None and kv.value == b"not json at all"  # left for the operator
    report = ipam.check()
    assert not report.ok
    assert any(KEYS.block("10.16.0.0/26") in i for i in report.inconsistencies), report.inconsistencies
    with pytest.raises(AddressUnavailable, match="malformed"):
        ipam.assign("10.16.0.5", "net.g2", "a", {})


def test_malformed_only_block_gives_a_clear_error(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.17.0.0/26")
    put_garbage_block(ds, "a", "10.17.0.0/26")
    ipam = IPAM(ds, KEYS)
    with pytest.raises(NoAddresses, match="no free block"):
        ipam.auto_assign("net.g3", "a", {})
    assert ds.get(KEYS.handle("net.g3")) is None


def test_set_config_over_malformed_stored_config_writes_a_valid_one(ds: MemoryDatastore) -> None:
    ds.put(KEYS.ipam_config, b"{broken")
    ipam = IPAM(ds, KEYS)
    cfg = ipam.set_config(maxBlocksPerHost=3)
    assert cfg.max_blocks_per_host == 3 and ipam.config() == cfg
    assert ipam.set_config(strictAffinity=True).max_blocks_per_host == 3  # built on what was just read


def test_a_stored_pool_the_model_refuses_is_absent_and_the_others_serve(ds: MemoryDatastore,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    add_pool(ds, "good", "10.0.0.0/24")
    bad = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "bad"}}
    ds.put(KEYS.resource("ippools", "bad"), json.dumps({**bad, "spec": {"cidr": "10.1.0.1/24"}}).encode())
    ds.put(KEYS.resource("ippools", "huge"), json.dumps({**bad, "metadata": {"name": "huge"},
                                                         "spec": {"cidr": "10.2.0.0/16", "blockSize": 40}}).encode())
    ds.put(KEYS.resource("ippools", "junk"), b"{not json")
    add_node(ds, "n1")
    ipam = IPAM(ds, KEYS)
    assert [p.name for p in ipam.pools()] == ["good"]
    assert "ignoring malformed IPPool" in caplog.text and "spec.blockSize" in caplog.text
    (ip,) = ipam.auto_assign("h1", "n1", {})
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.0.0.0/24")


def _put(ds: MemoryDatastore, plural: str, name: str, doc: object) -> None:
    ds.put(KEYS.resource(plural, name), doc if isinstance(doc, bytes) else json.dumps(doc).encode())


def _node(name: str, labels: dict[str, str], spec: dict | None = None) -> dict:
    return {"apiVersion": "l3net.io/v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "spec": spec or {}}


def _namespace(name: str, labels: dict[str, str], **extra: object) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}, **extra}


@pytest.mark.parametrize("stored", [
    _node("a", {"rack": "r1"}, {"bgp": {"ipv4Address": "not-an-ip"}}),   # labels fine, the Node is not
    b"{not json",
], ids=["refused-by-the-model", "not-json"])
def test_an_invalid_node_is_absent_logged_and_only_a_pool_selecting_every_node_serves_it(
        ds: MemoryDatastore, caplog: pytest.LogCaptureFixture, stored: object) -> None:
    add_pool(ds, "all", "10.10.0.0/24")
    add_pool(ds, "norack", "10.11.0.0/24", nodeSelector="!has(rack)")
    add_pool(ds, "r1", "10.12.0.0/24", nodeSelector="rack == 'r1'")
    _put(ds, "nodes", "a", stored)
    ipam = IPAM(ds, KEYS)
    # Neither the pool its raw labels pick (r1) nor the one an absent Node's {} would (norack): fail closed.
    assert [p.name for p in ipam.eligible_pools("a")] == ["all"]
    assert f"treating malformed resource as absent key={KEYS.resource('nodes', 'a')}" in caplog.text
    if isinstance(stored, dict):
        assert "spec.bgp.ipv4Address" in caplog.text   # the model's reason, naming the field
    assert ipam.auto_assign("net.1", "a", {})[0].startswith("10.10.0.")
    with pytest.raises(NoAddresses, match="no enabled IPv4 pool selects node 'a'"):
        ipam.auto_assign("net.2", "a", {}, pools=["r1", "norack"])
    assert ipam.handle_ips("net.2") == []
    # Valid again: its labels count, and the cached context of the first ADD (which rests on the Node) is stale.
    add_node(ds, "a", {"rack": "r1"})
    assert [p.name for p in ipam.eligible_pools("a")] == ["all", "r1"]
    assert ipam.auto_assign("net.3", "a", {}, pools=["r1"])[0].startswith("10.12.0.")


def test_a_valid_node_selects_by_its_labels_as_before(ds: MemoryDatastore, caplog: pytest.LogCaptureFixture) -> None:
    add_pool(ds, "all", "10.10.0.0/24")
    add_pool(ds, "norack", "10.11.0.0/24", nodeSelector="!has(rack)")
    add_pool(ds, "r1", "10.12.0.0/24", nodeSelector="rack == 'r1'")
    add_node(ds, "a", {"rack": "r1"})
    ipam = IPAM(ds, KEYS)
    assert [p.name for p in ipam.eligible_pools("a")] == ["all", "r1"]
    assert [p.name for p in ipam.eligible_pools("b")] == ["all", "norack"]   # stored, no labels
    assert [p.name for p in ipam.eligible_pools("absent")] == ["all", "norack"]   # no Node at all
    assert "malformed" not in caplog.text


@pytest.mark.parametrize("stored", [
    _namespace("shop", {"team": "a"}, spec={"finalizers": 1}),
    _namespace("shop", {"team": "a", "bad key!": "x"}),
    b"\xff",
], ids=["unknown-field", "bad-label", "not-utf8"])
def test_an_invalid_namespace_is_absent_logged_and_only_a_pool_selecting_every_namespace_serves_it(
        ds: MemoryDatastore, caplog: pytest.LogCaptureFixture, stored: object) -> None:
    add_pool(ds, "any", "10.20.0.0/24")
    add_pool(ds, "rest", "10.21.0.0/24", namespaceSelector="!has(team)")
    add_pool(ds, "team-a", "10.22.0.0/24", namespaceSelector="team == 'a'")
    add_pool(ds, "by-name", "10.23.0.0/24", namespaceSelector="projectcalico.org/name == 'shop'")
    _put(ds, "namespaces", "shop", stored)
    ipam = IPAM(ds, KEYS)
    assert [p.name for p in ipam.eligible_pools("a", namespace="shop")] == ["any"]
    assert f"treating malformed resource as absent key={KEYS.resource('namespaces', 'shop')}" in caplog.text
    _put(ds, "namespaces", "shop", _namespace("shop", {"team": "a"}))
    assert [p.name for p in ipam.eligible_pools("a", namespace="shop")] == ["any", "by-name", "team-a"]
    assert [p.name for p in ipam.eligible_pools("a", namespace="other")] == ["any", "rest"]   # absent: {}


def test_a_slow_path_add_decodes_each_stored_resource_once(ds: MemoryDatastore,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # The first pass claims a block and goes round again: the second re-reads the pools, the Node, the
    # Namespace and the reservations, but validates none of them again (they did not change).
    from l3net.ipam import allocator
    add_pool(ds, "p", "10.30.0.0/24", nodeSelector="has(rack)", namespaceSelector="team == 'a'")
    add_node(ds, "a", {"rack": "r1"})
    _put(ds, "namespaces", "shop", _namespace("shop", {"team": "a"}))
    _put(ds, "ipreservations", "r", {"apiVersion": "projectcalico.org/v3", "kind": "IPReservation",
                                     "metadata": {"name": "r"}, "spec": {"reservedCIDRs": ["10.30.0.0/30"]}})
    decoded: list[str] = []
    real = allocator.decode
    monkeypatch.setattr(allocator, "decode", lambda keys, key, *a: decoded.append(key) or real(keys, key, *a))
    passes: list[str] = []
    real_pass = IPAM._try_assign_one
    monkeypatch.setattr(IPAM, "_try_assign_one", lambda self, *a: passes.append("") or real_pass(self, *a))
    assert IPAM(ds, KEYS).auto_assign("net.1", "a", {"namespace": "shop"}) == ["10.30.0.4"]
    assert len(passes) == 2
    assert sorted(decoded) == sorted({KEYS.resource("ippools", "p"), KEYS.resource("nodes", "a"),
                                      KEYS.resource("namespaces", "shop"), KEYS.resource("ipreservations", "r")})
