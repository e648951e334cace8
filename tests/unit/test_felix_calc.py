"""felix.calc: the pure calculation from datastore values to one DesiredState."""

from __future__ import annotations

import ipaddress
import json
import random

import pytest

from felix import wiring
from felix.calc import (
    Calculation,
    Model,
    Pool,
    PoolIndex,
    Workload,
    compute,
    compute_policy,
    outside_pools,
    pool_index,
)
from felix.desired import Advertisement, InterfaceSpec, RouteSpec
from felix.links import Link
from l3net.keys import KeyLayout
from l3net.model.resource import Resource
from l3net.model.validation import workload_endpoint_name
from tests.builders import Upd

pytestmark = pytest.mark.unit

KEYS = KeyLayout("/u/")




def wep(pod: str, node: str, ips: list[str], iface: str) -> Upd:
    name = workload_endpoint_name(node, pod, "eth0")
    res = Resource(kind="WorkloadEndpoint", name=name, namespace="ns1",
                   spec={"node": node, "orchestrator": "k8s", "pod": pod, "endpoint": "eth0",
                         "ipNetworks": ips, "interfaceName": iface})
    return Upd(KEYS.resource("workloadendpoints", name, "ns1"), res.to_json())


def pool(name: str, cidr: str, **extra: object) -> Upd:
    res = Resource(kind="IPPool", name=name, spec={"cidr": cidr, **extra})
    return Upd(KEYS.resource("ippools", name), res.to_json())


def aff(node: str, cidr: str, state: str = "confirmed") -> Upd:
    return Upd(KEYS.affinity(node, cidr), json.dumps({"state": state}).encode())


LINKS = {"cali1": Link("cali1", 11, True), "cali2": Link("cali2", 12, True), "cali3": Link("cali3", 13, False)}
STATE = [
    pool("p1", "10.65.0.0/16"), pool("p2", "10.99.0.0/16", disableBGPExport=True),
    wep("a", "n1", ["10.65.0.2/32"], "cali1"),
    wep("b", "n1", ["10.65.7.9/32"], "cali2"),          # borrowed from n2's block
    wep("c", "n1", ["10.65.0.4/32"], "cali3"),          # interface down
    wep("d", "n1", ["10.65.0.5/32"], "cali4"),          # interface missing
    wep("e", "n2", ["10.65.7.2/32"], "cali9"),          # another node's
    wep("f", "n1", ["10.99.0.7/32"], "cali1"),          # second address on cali1, no-export pool
    aff("n1", "10.65.0.0/26"), aff("n1", "10.65.1.0/26", "pending"), aff("n2", "10.65.7.0/26"),
    aff("n1", "10.99.0.64/26"),
]
LEARNED = {"10.65.7.0/26": ["10.0.0.2"], "10.65.0.0/26": ["10.0.0.2"], "10.65.0.2/32": ["10.0.0.3"],
           "10.65.0.9/32": ["10.0.0.3", "10.0.0.2", "10.0.0.2"], "10.65.8.0/26": ["10.0.0.1"], "bogus": ["x"]}


def model_of(updates: list[Upd]) -> Model:
    m = Model(KEYS)
    m.apply(updates)
    return m


def test_desired_state_of_a_node() -> None:
    d = compute(model_of(STATE), "n1", LINKS, LEARNED, node_ips=["10.0.0.1"])
    assert d.routes == {
        RouteSpec("10.65.0.2/32", "workload", ifname="cali1", ifindex=11),
        RouteSpec("10.99.0.7/32", "workload", ifname="cali1", ifindex=11),
        RouteSpec("10.65.7.9/32", "workload", ifname="cali2", ifindex=12),
        RouteSpec("10.65.0.0/26", "blackhole"),
        RouteSpec("10.99.0.64/26", "blackhole"),
        RouteSpec("10.65.7.0/26", "learned", next_hops=("10.0.0.2",)),
        RouteSpec("10.65.0.9/32", "learned", next_hops=("10.0.0.2", "10.0.0.3")),  # borrowed by a peer: ECMP
        # 10.65.8.0/26 only via our own address: dropped
    }
    assert d.interfaces == {InterfaceSpec("cali1"), InterfaceSpec("cali2")}
    assert d.waiting_for_interfaces == ("cali3", "cali4")
    assert d.advertisements == {Advertisement("10.65.0.0/26", "block"), Advertisement("10.65.7.9/32", "borrowed")}
    assert d.local_endpoints == 5 and d.local_blocks == 2


def test_order_of_updates_does_not_matter() -> None:
    expected = compute(model_of(STATE), "n1", LINKS, LEARNED)
    rnd = random.Random(5)
    for _ in range(20):
        shuffled = STATE[:]
        rnd.shuffle(shuffled)
        assert compute(model_of(shuffled), "n1", LINKS, LEARNED) == expected
    assert compute(model_of(list(reversed(STATE))), "n1", LINKS, LEARNED) == expected


def test_deleting_everything_leaves_nothing() -> None:
    m = model_of(STATE)
    m.apply([Upd(u.key, None, 2) for u in STATE])
    d = compute(m, "n1", LINKS, {})
    assert not d.routes and not d.interfaces and not d.advertisements
    assert not m.resources and not m.affinities


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'"x"', json.dumps({"kind": "WorkloadEndpoint"}).encode(),
                                 b'{"apiVersion":"l3net.io/v1","kind":"IPPool","metadata":{"name":"p1"},'
                                 b'"spec":{"cidr":"nope"}}'])
def test_a_bad_value_is_absent_and_leaves_the_rest_alone(raw: bytes) -> None:
    good = compute(model_of(STATE), "n1", LINKS, {})
    m = model_of(STATE)
    bad_key = STATE[2].key  # workload a
    m.apply([Upd(bad_key, raw, 3)])
    d = compute(m, "n1", LINKS, {})
    assert bad_key in m.invalid
    assert d.routes == good.routes - {RouteSpec("10.65.0.2/32", "workload", ifname="cali1", ifindex=11)}


def test_bad_affinity_values_are_absent() -> None:
    m = model_of(STATE)
    key = KEYS.affinity("n1", "10.65.0.0/26")
    m.apply([Upd(key, b'{"state": 5}', 3)])
    assert key in m.invalid
    assert RouteSpec("10.65.0.0/26", "blackhole") not in compute(m, "n1", LINKS, {}).routes


def test_two_workloads_claiming_one_address_keep_the_first_deterministically() -> None:
    m = model_of([pool("p1", "10.65.0.0/16"), wep("a", "n1", ["10.65.0.2/32"], "cali1"),
                  wep("b", "n1", ["10.65.0.2/32"], "cali2")])
    routes = compute(m, "n1", LINKS, {}).routes
    assert len(routes) == 1


def test_builders_are_called_with_the_model() -> None:
    seen = []

    def builder(model: Model, node: str) -> str:
        seen.append((len(model.workloads), node))
        return "view"

    d = compute(model_of(STATE), "n1", LINKS, {}, bgp_builder=builder, policy_builder=builder)
    assert d.bgp_view == "view" and d.policy == "view" and seen == [(6, "n1"), (6, "n1")]


def test_the_policy_side_computes_the_policy_and_nat_slices_of_the_whole_state_and_nothing_else() -> None:
    model = model_of([*STATE, pool("masq", "10.77.0.0/16", natOutgoing=True)])
    whole = compute(model, "n1", LINKS, LEARNED, policy_builder=lambda m, n: ("program", n))
    part = compute_policy(model, "n1", lambda m, n: ("program", n))
    assert part.policy == whole.policy == ("program", "n1")
    assert part.nat == whole.nat and part.nat.masq_pools == ("10.77.0.0/16",)
    assert part.routes == part.interfaces == part.advertisements == frozenset() and part.bgp_view is None
    assert compute_policy(model, "n1", None).policy is None


def test_exports_only_blocks_and_borrowed_addresses_inside_pools_and_never_routes_via_a_local_pod() -> None:
    outside = [*STATE, wep("g", "n1", ["192.0.2.7/32"], "cali2")]     # an address in no pool
    learned = {"198.51.100.0/24": ["10.65.0.2"], "203.0.113.0/24": ["10.65.0.2", "10.0.0.3"]}
    d = compute(model_of(outside), "n1", LINKS, learned, node_ips=["10.0.0.1"])
    assert Advertisement("192.0.2.7/32", "borrowed") not in d.advertisements
    assert Advertisement("10.65.7.9/32", "borrowed") in d.advertisements
    # a learned route via a local workload's address is not installed; other next hops stay
    learned_routes = {r.dst: r.next_hops for r in d.routes if r.kind == "learned"}
    assert "198.51.100.0/24" not in learned_routes
    assert learned_routes["203.0.113.0/24"] == ("10.0.0.3",)


def test_resources_by_kind_follow_updates_deletes_and_invalid_values() -> None:
    node = Resource(kind="Node", name="n1", spec={"bgp": {"ipv4Address": "10.0.0.1/24"}})
    key = KEYS.resource("nodes", "n1")
    m = model_of([Upd(key, node.to_json()), wep("a", "n1", ["10.65.0.2/32"], "cali1")])
    assert [r.name for r in m.resources_of("Node")] == ["n1"]
    assert [w.host_prefixes for w in m.workloads.values()] == [("10.65.0.2/32",)]
    m.apply([Upd(key, b"{not json")])
    assert m.resources_of("Node") == [] and key in m.invalid
    m.apply([Upd(key, node.to_json())])
    m.apply([Upd(key, None)])
    assert m.resources_of("Node") == [] and len(m.resources_of("WorkloadEndpoint")) == 1


def test_pool_index_answers_as_the_pools_say_is_shared_per_pool_set_and_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def wl(key: str, *nets: str) -> Workload:
        return Workload(key=key, node="n1", ifname="cali1", networks=tuple(ipaddress.ip_network(n) for n in nets),
                        resource=Resource("WorkloadEndpoint", key, {}))

    model = Model(KeyLayout("/t/"))
    model.pools = {"p": Pool(key="p", cidr=ipaddress.ip_network("10.65.0.0/16"), disable_bgp_export=False,
                             disabled=False)}
    index = pool_index(model)
    assert pool_index(model) is index  # the same pools, the same index (and its remembered answers)
    assert outside_pools(wl("a", "10.65.1.2/32"), index) == ()
    assert outside_pools(wl("b", "10.65.1.3/32", "10.66.0.1/32"), index) == ("10.66.0.1/32",)
    model.pools["q"] = Pool(key="q", cidr=ipaddress.ip_network("10.66.0.0/16"), disable_bgp_export=False,
                            disabled=False)
    assert pool_index(model) is not index
    assert outside_pools(wl("b", "10.65.1.3/32", "10.66.0.1/32"), pool_index(model)) == ()
    monkeypatch.setattr(PoolIndex, "MEMO_MAX", 3)
    small = PoolIndex([ipaddress.ip_network("10.0.0.0/8")])
    for i in range(10):
        assert outside_pools(wl(f"w{i}", f"10.0.0.{i}/32"), small) == ()
    assert len(small._outside) <= 3


def test_remembered_wiring_gives_what_a_cold_calculation_gives_through_any_sequence_of_changes() -> None:
    """The calculation re-wires only changed workloads (felix.wiring.LocalWiring): after each random change to the
    workloads, their interfaces, the node's blocks and the pools, the result equals one computed from cold."""
    rng = random.Random(18)
    model = model_of([pool("p1", "10.65.0.0/16"), aff("n1", "10.65.0.0/26")])
    links: dict[str, Link] = {}
    warm = Calculation("n1")
    for step in range(600):
        i = rng.randrange(12)
        choice = rng.random()
        if choice < 0.4:
            # some clash, some are borrowed, some lie outside every pool until p3 exists
            ips = [f"10.{rng.choice([65, 65, 65, 70])}.{rng.choice([0, 0, 3, 9])}.{rng.randrange(2, 6)}/32"
                   for _ in range(rng.choice([1, 1, 2]))]
            model.apply([wep(f"w{i}", rng.choice(["n1", "n1", "n2"]), ips, f"cali{rng.choice([i, i, 0])}")])
        elif choice < 0.55:
            model.apply([Upd(wep(f"w{i}", "n1", [], "x").key, None)])
        elif choice < 0.75:
            links[f"cali{i}"] = Link(f"cali{i}", 100 + rng.randrange(3), rng.random() < 0.8)
        elif choice < 0.8:
            links.pop(f"cali{i}", None)
        elif choice < 0.9:
            start, size = rng.choice([(0, 26), (0, 26), (4, 30)])
            model.apply([aff("n1", f"10.65.{rng.choice([3, 9])}.{start}/{size}", rng.choice(["confirmed", "pending"]))])
        elif choice < 0.95:
            model.apply([pool("p2", "10.65.9.0/24", disableBGPExport=rng.random() < 0.5)])
        else:
            model.apply([pool("p3", "10.70.0.0/16")] if rng.random() < 0.5 else [Upd(pool("p3", "x").key, None)])
        # the warm calculation keeps its whole history; compute() is a calculation from cold
        assert warm.desired(model, links, LEARNED) == compute(model, "n1", links, LEARNED), f"step {step}"


def test_a_block_claim_rewires_only_the_workloads_inside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's churn claims and releases one block at a time: the workloads outside it keep their wiring, and
    the one inside it is re-wired (its address stops being borrowed and is no longer advertised alone)."""
    updates = [pool("p1", "10.65.0.0/16"), aff("n1", "10.65.0.0/26"), wep("in", "n1", ["10.65.3.7/32"], "cali1")]
    updates += [wep(f"w{i}", "n1", [f"10.65.0.{i + 2}/32"], f"cali{i + 2}") for i in range(20)]
    model = model_of(updates)
    links = {f"cali{i}": Link(f"cali{i}", 10 + i, True) for i in range(1, 23)}
    wired: list[str] = []
    calculation = Calculation("n1")
    calculation._wiring._wire = lambda w, *a: wired.append(w.ifname) or wiring.wire_one(w, *a)
    before = calculation.desired(model, links, {})
    assert Advertisement("10.65.3.7/32", "borrowed") in before.advertisements and len(wired) == 21
    wired.clear()
    model.apply([aff("n1", "10.65.3.0/26")])
    after = calculation.desired(model, links, {})
    assert wired == ["cali1"]
    assert Advertisement("10.65.3.7/32", "borrowed") not in after.advertisements
    assert Advertisement("10.65.3.0/26", "block") in after.advertisements
    model.apply([Upd(aff("n1", "10.65.3.0/26").key, None)])   # released: borrowed again
    assert calculation.desired(model, links, {}).advertisements == before.advertisements
    assert wired == ["cali1", "cali1"]


def test_the_bgp_view_reuses_the_cluster_facts_only_while_the_model_is_unchanged() -> None:
    """felix.main.bgp_builder keeps the IPAM facts (every workload of the cluster) between applies with no
    model change, so the view's import context is the same object; any update rebuilds both."""
    from felix.main import bgp_builder

    node = Resource(kind="Node", name="n1", spec={"bgp": {"ipv4Address": "10.0.0.1/24"}})
    model = model_of([*STATE, Upd(KEYS.resource("nodes", "n1"), node.to_json())])
    build = bgp_builder()
    first = build(model, "n1")
    assert build(model, "n1").guard is first.guard
    assert ("10.65.0.2/32", "n1") in first.guard.address_owner
    model.apply([wep("g", "n2", ["10.65.7.3/32"], "cali5")])
    second = build(model, "n1")
    assert ("10.65.7.3/32", "n2") in second.guard.address_owner
    assert ("10.65.7.3/32", "n2") not in first.guard.address_owner
    other = model_of([*STATE, Upd(KEYS.resource("nodes", "n1"), node.to_json())])   # same generation, new model
    assert build(other, "n1").guard.address_owner == first.guard.address_owner


def _walked_owners(model: Model) -> frozenset[tuple[str, str]]:
    return frozenset((dst, w.node) for w in model.workloads.values() for dst in w.host_prefixes)


def test_the_address_owners_kept_as_workloads_come_and_go_equal_a_walk_of_the_cluster() -> None:
    """Model.address_owners and workload_addresses are counted on each update, never walked: after adds,
    a move to another node, a second endpoint on one address, IPv6 written in upper case, deletes and an
    endpoint that stops validating, they equal what a walk of every workload gives."""
    model = model_of(STATE)
    assert model.address_owners() == _walked_owners(model)
    assert model.workload_addresses("n1") == {"10.65.0.2", "10.65.7.9", "10.65.0.4", "10.65.0.5", "10.99.0.7"}
    model.apply([wep("a", "n2", ["10.65.0.2/32"], "cali1"),     # a's key is per node: a second endpoint
                 wep("x", "n2", ["10.65.7.9/32"], "cali8"),     # shares b's address, from another node
                 wep("v6", "n2", ["FD00:0:0::A/128"], "cali7")])    # IPv6 as canonical text
    assert model.address_owners() == _walked_owners(model)
    assert ("fd00::a/128", "n2") in model.address_owners()
    assert model.workload_addresses("n2") == {"10.65.7.2", "10.65.0.2", "10.65.7.9", "fd00::a"}
    model.apply([Upd(wep("b", "n1", [], "").key, None), Upd(wep("x", "n2", [], "").key, None),
                 Upd(wep("e", "n2", [], "").key, b"{not json")])
    assert model.address_owners() == _walked_owners(model)
    assert ("10.65.7.9/32", "n1") not in model.address_owners() and "10.65.7.9" not in model.workload_addresses("n1")
    assert model.workload_addresses("n2") == {"10.65.0.2", "fd00::a"}
    model.apply([Upd(k, None) for k in list(model.workloads)])
    assert model.address_owners() == frozenset() and model.workload_addresses("n1") == frozenset()
    assert model._addresses_by_node == {}


def test_a_learned_route_reuses_the_local_part_and_a_model_or_link_change_redoes_it() -> None:
    """A Calculation keeps what it derived from the model and the links while neither changes (a route learned
    over BGP changes neither); the result is the one a calculation from cold gives either way."""
    model = model_of(STATE)
    calculation = Calculation("n1")
    first = calculation.desired(model, LINKS, {})
    part = calculation._last
    learned = calculation.desired(model, LINKS, LEARNED, node_ips=["10.0.0.1"])
    assert calculation._last is part
    assert learned == compute(model_of(STATE), "n1", dict(LINKS), LEARNED, node_ips=["10.0.0.1"])
    assert learned.routes > first.routes and learned.interfaces == first.interfaces
    up = {**LINKS, "cali3": Link("cali3", 13, True)}
    route = RouteSpec("10.65.0.4/32", "workload", ifname="cali3", ifindex=13)
    assert route in calculation.desired(model, up, {}).routes
    assert calculation._last is not part
    model.apply([wep("g", "n1", ["10.65.0.8/32"], "cali2")])
    route = RouteSpec("10.65.0.8/32", "workload", ifname="cali2", ifindex=12)
    assert route in calculation.desired(model, up, {}).routes


def test_another_nodes_pod_keeps_the_local_part_and_anything_else_redoes_it() -> None:
    """The local part is kept across another node's workloads and affinities; this node's workloads and
    affinities, pools and cluster-wide resources each move the node's local generation."""
    model = model_of(STATE)
    calculation = Calculation("n1")
    calculation.desired(model, LINKS, {})
    part = calculation._last
    model.apply([wep("z", "n2", ["10.65.7.20/32"], "cali20"), aff("n2", "10.65.9.0/26"),
                 Upd(wep("e", "n2", [], "").key, None)])
    kept = calculation.desired(model, LINKS, {})
    assert calculation._last is part
    assert kept == compute(model_of(model_updates(model)), "n1", LINKS, {})
    for change in (wep("y", "n1", ["10.65.0.30/32"], "cali1"), aff("n1", "10.65.2.0/26"),
                   pool("p3", "10.98.0.0/16"), Upd(KEYS.resource("bgpconfigurations", "default"), Resource(
                       kind="BGPConfiguration", name="default",
                       spec={"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]}).to_json()),
                   Upd(wep("a", "n1", [], "").key, None)):
        before = model.local_generation("n1")
        model.apply([change])
        assert model.local_generation("n1") > before, change.key
        fresh = calculation.desired(model, LINKS, {})
        assert calculation._last is not part
        part = calculation._last
        assert fresh == compute(model_of(model_updates(model)), "n1", LINKS, {})


def model_updates(model: Model) -> list[Upd]:
    """Updates that rebuild ``model``'s workloads, pools and affinities in a fresh one."""
    out = [Upd(k, r.to_json()) for k, r in model.resources.items()]
    return out + [Upd(k, json.dumps({"state": a.state}).encode()) for k, a in model.affinities.items()]
