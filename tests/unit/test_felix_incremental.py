"""felix.blocks, felix.learned and felix.netindex: the parts the calculation keeps between runs give, through any
sequence of changes, what a pass over everything gives (the references below are such passes, written here
independently of the code under test)."""

from __future__ import annotations

import ipaddress
import json
import random
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felix.calc import Calculation, Model, compute
from felix.desired import Advertisement, DesiredState, RouteSpec
from felix.links import Link
from felix.netindex import BlockIndex
from l3net.keys import KeyLayout
from l3net.model.resource import Resource
from l3net.model.validation import workload_endpoint_name
from tests.builders import Upd

pytestmark = pytest.mark.unit

KEYS = KeyLayout("/u/")
NODE_IP = "10.0.0.1"

nets = st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False), st.integers(0, 2**16 - 1).map(
    lambda a: (10 << 24) | (a << 8)), st.integers(16, 32))


@given(st.lists(st.tuples(st.booleans(), nets), max_size=30), st.lists(nets, max_size=10))
def test_block_index_answers_like_a_scan_of_its_members_after_any_adds_and_discards(ops, probes) -> None:
    index, members = BlockIndex(), set()
    for add, net in ops:
        if add:
            index.add(net)
            members.add(net)
        else:
            index.discard(net)
            members.discard(net)
    index.publish()
    assert index.nets == members
    for net in probes + list(members):
        assert (net in index) == any(net.subnet_of(m) for m in members)


def _wep(pod: str, ips: list[str], iface: str) -> Upd:
    name = workload_endpoint_name("n1", pod, "eth0")
    res = Resource(kind="WorkloadEndpoint", name=name, namespace="ns1",
                   spec={"node": "n1", "orchestrator": "k8s", "pod": pod, "endpoint": "eth0", "ipNetworks": ips,
                         "interfaceName": iface})
    return Upd(KEYS.resource("workloadendpoints", name, "ns1"), res.to_json())


def _pool(name: str, cidr: str, **extra: object) -> Upd:
    res = Resource(kind="IPPool", name=name, spec={"cidr": cidr, **extra})
    return Upd(KEYS.resource("ippools", name), res.to_json())


def _aff(cidr: str, state: str) -> Upd:
    return Upd(KEYS.affinity("n1", cidr), json.dumps({"state": state}).encode())


def _services(cidrs: list[str]) -> Upd:
    res = Resource(kind="BGPConfiguration", name="default",
                   spec={"serviceClusterIPs": [{"cidr": c} for c in cidrs]})
    return Upd(KEYS.resource("bgpconfigurations", "default"), res.to_json())


def _reference_blocks(model: Model, routes: frozenset[RouteSpec]) -> tuple[set[RouteSpec], set[Advertisement]]:
    """The blackholes and block advertisements by a pass over every confirmed block of n1."""
    workload_dsts = {r.dst for r in routes if r.kind == "workload"}
    no_export = [p.cidr for p in model.pools.values() if p.disable_bgp_export]
    holes, adverts = set(), set()
    for a in model.affinities.values():
        if a.node != "n1" or a.state != "confirmed":
            continue
        if str(a.cidr) not in workload_dsts:
            holes.add(RouteSpec(str(a.cidr), "blackhole"))
        if not any(a.cidr.subnet_of(p) for p in no_export if p.version == a.cidr.version):
            adverts.add(Advertisement(str(a.cidr), "block"))
    return holes, adverts


def _reference_learned(learned: Mapping[str, Sequence[str]], taken: set[str], own: set[str],
                       services: list[str]) -> set[RouteSpec]:
    """The learned routes by a pass over every learned prefix (the greatest spelling of one destination wins)."""
    best: dict[str, tuple[str, RouteSpec]] = {}
    for prefix, hops in learned.items():
        try:
            net = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            continue
        dst = str(net)
        if dst in taken or any(net.subnet_of(ipaddress.ip_network(s)) for s in services):
            continue
        next_hops = tuple(sorted({h for h in hops if h and h not in own}))
        if next_hops and (dst not in best or prefix > best[dst][0]):
            best[dst] = (prefix, RouteSpec(dst, "learned", next_hops=next_hops))
    return {route for _, route in best.values()}


def _check(d: DesiredState, model: Model, learned: Mapping[str, Sequence[str]], services: list[str]) -> None:
    workload_routes = frozenset(r for r in d.routes if r.kind == "workload")
    holes, adverts = _reference_blocks(model, workload_routes)
    assert {r for r in d.routes if r.kind == "blackhole"} == holes
    assert {a for a in d.advertisements if a.reason == "block"} == adverts
    # Taken: every n1 workload's address (waiting ones too; all lie inside pool p1) and n1's confirmed
    # blocks. Own (never a next hop): those addresses and the node's own.
    workload_dsts = {n for w in model.workloads_on("n1") for n in w.dsts}
    confirmed = {str(a.cidr) for a in model.affinities.values() if a.node == "n1" and a.state == "confirmed"}
    own = {dst.partition("/")[0] for dst in workload_dsts} | {NODE_IP}
    want = _reference_learned(learned, workload_dsts | confirmed, own, services)
    assert {r for r in d.routes if r.kind == "learned"} == want


def test_kept_blocks_and_learned_routes_give_what_a_pass_over_everything_gives_through_any_changes() -> None:
    """After each random change (blocks claimed, released, pending; /32 blocks holding a pod's own address;
    pools that stop BGP export; routes learned, withdrawn, re-hopped, via our own pods, onto our own blocks,
    inside Service CIDRs), the warm calculation equals a cold one and both equal the independent references."""
    rng = random.Random(2026)
    model = Model(KEYS)
    model.apply([_pool("p1", "10.65.0.0/16")])
    links: dict[str, Link] = {}
    learned: dict[str, tuple[str, ...]] = {}
    services: list[str] = []
    warm = Calculation("n1")
    hops = [NODE_IP, "10.0.0.2", "10.0.0.3", "10.65.0.2", "10.65.3.5"]   # two of them can be our own pods
    for step in range(1500):
        choice = rng.random()
        third = rng.choice([0, 3, 9])
        if choice < 0.2:
            size = rng.choice([26, 26, 32])
            start = rng.choice([0, 64]) if size == 26 else rng.choice([2, 5])
            model.apply([_aff(f"10.65.{third}.{start}/{size}", rng.choice(["confirmed", "confirmed", "pending"]))])
        elif choice < 0.27:
            size = rng.choice([26, 32])
            start = rng.choice([0, 64]) if size == 26 else rng.choice([2, 5])
            model.apply([Upd(_aff(f"10.65.{third}.{start}/{size}", "x").key, None)])
        elif choice < 0.45:
            i = rng.randrange(6)
            model.apply([_wep(f"w{i}", [f"10.65.{third}.{rng.choice([2, 5, 70])}/32"], f"cali{i}")])
            links[f"cali{i}"] = Link(f"cali{i}", 100 + i, rng.random() < 0.9)
        elif choice < 0.5:
            model.apply([Upd(_wep(f"w{rng.randrange(6)}", [], "x").key, None)])
        elif choice < 0.55:
            model.apply([_pool("p2", "10.65.9.0/24", disableBGPExport=rng.random() < 0.5)])
        elif choice < 0.58:
            services = rng.choice([[], ["10.65.3.0/24"], ["10.65.9.64/26"]])
            model.apply([_services(services)])
        elif choice < 0.9:
            size = rng.choice([26, 26, 32])
            start = rng.choice([0, 64]) if size == 26 else rng.choice([2, 5, 9])
            prefix = f"10.65.{rng.choice([0, 3, 9, 12])}.{start}/{size}"
            learned = dict(learned)
            learned[prefix] = tuple(sorted(set(rng.sample(hops, rng.randrange(1, 4)))))
        elif choice < 0.97:
            learned = dict(learned)
            if learned:
                del learned[rng.choice(sorted(learned))]
        else:
            learned = {**learned, "10.65.12.1/26": ("10.0.0.2",), "bogus": ("10.0.0.3",)}  # a second spelling
        d = warm.desired(model, links, learned, node_ips=[NODE_IP])
        assert d == compute(model, "n1", links, learned, node_ips=[NODE_IP]), f"step {step}"
        _check(d, model, learned, services)


def test_one_block_claim_redoes_one_block_and_one_learned_route_one_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of keeping them: a claim on a node of 200 blocks, and a route learned next to 200 others, cost
    one block's and one prefix's work."""
    model = Model(KEYS)
    model.apply([_pool("p1", "10.65.0.0/16")] + [_aff(f"10.65.{i}.0/26", "confirmed") for i in range(200)])
    learned = {f"10.66.{i}.0/26": ("10.0.0.2",) for i in range(200)}
    calc = Calculation("n1")
    calc.desired(model, {}, learned, node_ips=[NODE_IP])
    redone: list[str] = []
    routed: list[str] = []
    blocks_redo, learned_route = calc._blocks._redo, calc._learned._route
    monkeypatch.setattr(calc._blocks, "_redo", lambda net, *a: redone.append(str(net)) or blocks_redo(net, *a))
    monkeypatch.setattr(calc._learned, "_route", lambda dst, h: routed.append(dst) or learned_route(dst, h))
    model.apply([_aff("10.65.250.0/26", "confirmed")])
    d = calc.desired(model, {}, {**learned, "10.66.250.0/26": ("10.0.0.3",)}, node_ips=[NODE_IP])
    assert redone == ["10.65.250.0/26"] and routed == ["10.66.250.0/26"]
    assert RouteSpec("10.65.250.0/26", "blackhole") in d.routes
    assert RouteSpec("10.66.250.0/26", "learned", next_hops=("10.0.0.3",)) in d.routes
    assert d.local_blocks == 201 and len([r for r in d.routes if r.kind == "learned"]) == 201


def test_block_owners_are_counted_as_affinities_come_and_go_and_equal_a_walk() -> None:
    """Model.block_owners (the BGP import defaults read it on every change anywhere) is kept, not walked: after
    random claims, confirmations, releases and invalid values it equals a walk of the affinities."""
    rng = random.Random(7)
    model = Model(KEYS)
    for step in range(400):
        node, cidr = rng.choice(["n1", "n2", "n3"]), f"10.65.{rng.randrange(6)}.0/26"
        key = KEYS.affinity(node, cidr)
        value = rng.choice([json.dumps({"state": "confirmed"}).encode(), json.dumps({"state": "pending"}).encode(),
                            None, b"{not json"])
        model.apply([Upd(key, value)])
        walked = {(str(a.cidr), a.node) for a in model.affinities.values() if a.state == "confirmed"}
        assert model.block_owners() == walked, f"step {step}"
