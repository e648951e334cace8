"""bgp.planner: golden command sequences (exact ExaBGP API lines) for the announcement planner."""

from __future__ import annotations

import pytest

from bgp.commands import Advertisement
from bgp.planner import Command, NeighbourWant, Plan, apply_sent, plan

pytestmark = pytest.mark.unit

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
P1, P2, P3 = "10.244.1.0/26", "10.244.1.64/26", "10.244.2.0/26"
SELF = Advertisement()


def _lines(p: Plan) -> list[str]:
    return [c.line for c in p.commands]


def test_first_announce_groups_one_attribute_set_for_all_neighbours() -> None:
    p = plan([NeighbourWant(B, {P1: SELF, P2: SELF}), NeighbourWant(A, {P2: SELF, P1: SELF})], {})
    assert _lines(p) == [
        f"neighbor {A} , neighbor {B} announce attributes next-hop self origin igp nlri {P1} {P2}",
    ]
    assert p.commands[0].items == ((A, P1), (A, P2), (B, P1), (B, P2))
    assert p.sent == {A: {P1: SELF, P2: SELF}, B: {P1: SELF, P2: SELF}}
    assert p.refused == ()


def test_nothing_changed_plans_nothing_and_resend_repeats_everything() -> None:
    sent = {A: {P1: SELF}}
    assert plan([NeighbourWant(A, {P1: SELF})], sent) == Plan()
    again = plan([NeighbourWant(A, {P1: SELF}, resend=True)], sent)
    assert _lines(again) == [f"neighbor {A} announce attributes next-hop self origin igp nlri {P1}"]


def test_withdraw_comes_first_and_is_shared_by_neighbours_that_lose_the_same_prefixes() -> None:
    sent = {A: {P1: SELF, P2: SELF}, B: {P1: SELF, P2: SELF}}
    p = plan([NeighbourWant(A, {P1: SELF, P3: SELF}), NeighbourWant(B, {P1: SELF})], sent)
    assert _lines(p) == [
        f"neighbor {A} , neighbor {B} withdraw attributes nlri {P2}",
        f"neighbor {A} announce attributes next-hop self origin igp nlri {P3}",
    ]
    assert p.sent == {A: {P2: None, P3: SELF}, B: {P2: None}}
    state = {k: dict(v) for k, v in sent.items()}
    apply_sent(state, p.sent)
    assert state == {A: {P1: SELF, P3: SELF}, B: {P1: SELF}}


def test_attribute_change_reannounces_with_the_new_attributes_only_where_they_changed() -> None:
    old = Advertisement(communities=("64512:1",))
    new = Advertisement(communities=("64512:1", "64512:2"), med=10)
    sent = {A: {P1: old, P2: old}}
    p = plan([NeighbourWant(A, {P1: new, P2: old})], sent)
    assert _lines(p) == [
        f"neighbor {A} announce attributes next-hop self origin igp med 10 community [ 64512:1 64512:2 ] nlri {P1}",
    ]
    assert p.sent == {A: {P1: new}}


def test_reflector_fan_out_is_one_command_per_source_for_every_other_client() -> None:
    # three clients; each announced one prefix; the reflector (cluster 224.0.0.1) sends each to the two others
    def refl(src: str) -> Advertisement:
        return Advertisement(next_hop=src, local_pref=100, originator_id=src, cluster_list=("224.0.0.1",))
    owner = {P1: A, P2: B, P3: C}
    wants = [NeighbourWant(n, {pfx: refl(src) for pfx, src in owner.items() if src != n}) for n in (A, B, C)]
    p = plan(wants, {})
    attrs = "origin igp local-preference 100 originator-id {0} cluster-list [ 224.0.0.1 ]"
    assert _lines(p) == [
        f"neighbor {B} , neighbor {C} announce attributes next-hop {A} {attrs.format(A)} nlri {P1}",
        f"neighbor {A} , neighbor {C} announce attributes next-hop {B} {attrs.format(B)} nlri {P2}",
        f"neighbor {A} , neighbor {B} announce attributes next-hop {C} {attrs.format(C)} nlri {P3}",
    ]


def test_ebgp_neighbours_get_no_ibgp_attributes_and_a_separate_command() -> None:
    adv = Advertisement(local_pref=200, originator_id=A, cluster_list=("224.0.0.1",))
    p = plan([NeighbourWant(A, {P1: adv}), NeighbourWant(B, {P1: adv}, ibgp=False)], {})
    assert _lines(p) == [   # sorted by attribute text
        f"neighbor {B} announce attributes next-hop self origin igp nlri {P1}",
        f"neighbor {A} announce attributes next-hop self origin igp local-preference 200 originator-id {A} "
        f"cluster-list [ 224.0.0.1 ] nlri {P1}",
    ]


def test_partial_check_unsure_and_chunks() -> None:
    sent = {A: {P1: SELF, P2: SELF}}
    # only P2 is looked at: P1 stays although it is not wanted; unsure P3 is withdrawn although never sent
    p = plan([NeighbourWant(A, {}, check={P2, P3}, unsure={P3})], sent)
    assert _lines(p) == [f"neighbor {A} withdraw attributes nlri {P2} {P3}"]
    chunked = plan([NeighbourWant(A, {P1: SELF, P2: SELF, P3: SELF})], {}, batch=2)
    assert chunked.commands == (
        Command(f"neighbor {A} announce attributes next-hop self origin igp nlri {P1} {P2}", ((A, P1), (A, P2))),
        Command(f"neighbor {A} announce attributes next-hop self origin igp nlri {P3}", ((A, P3),)),
    )


def test_a_value_outside_the_api_grammar_is_refused_and_the_rest_goes_on() -> None:
    bad = Advertisement(communities=("no such community",))
    p = plan([NeighbourWant(A, {P1: bad, P2: SELF})], {})
    assert _lines(p) == [f"neighbor {A} announce attributes next-hop self origin igp nlri {P2}"]
    assert len(p.refused) == 1 and P1 in p.refused[0]
