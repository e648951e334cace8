"""policy.nat and felix.calc.nat_outgoing: natOutgoing from IPPools to the nat table slice (golden text)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felix.calc import Model, compute
from felix.desired import NatOutgoing
from l3net.errors import ValidationError
from l3net.keys import KeyLayout
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document
from policy.compiler import PolicyProgram, compile_policy
from policy.nat import IPSET_ALL_POOLS, IPSET_MASQ_POOLS, render_nat_outgoing, with_nat
from tests.builders import Upd

pytestmark = pytest.mark.unit

KEYS = KeyLayout("/u/")

# What the policy side hands iptables-restore for the nat table of a node whose
# 10.65.0.0/16 pool masquerades and 10.70.0.0/16 does not (on an empty nat table).
GOLDEN_CHAINS = {
    "l3n-POSTROUTING": ['-m comment --comment "l3n:rMAGS-LLv9Le0VK3" -j l3n-nat-outgoing'],
    "l3n-nat-outgoing": ['-m comment --comment "l3n:3SW3jle4Xwd7iERZ" -m set --match-set l3n4masq-ipam-pools src '
                         '-m set ! --match-set l3n4all-ipam-pools dst -j MASQUERADE'],
}
GOLDEN_HOOKS = {"POSTROUTING": ['-m comment --comment "l3n:AzSTPDa4Jd22FO8q" -j l3n-POSTROUTING']}


def _tuples(chains: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    return {name: tuple(rules) for name, rules in chains.items()}




def pool(name: str, cidr: str, **extra: object) -> Upd:
    res = Resource(kind="IPPool", name=name, spec={"cidr": cidr, **extra})
    return Upd(KEYS.resource("ippools", name), res.to_json())


def test_rendered_nat_table_matches_golden_text() -> None:
    nat = render_nat_outgoing(("10.65.0.0/16",), ("10.65.0.0/16", "10.70.0.0/16"))
    assert nat.chains == GOLDEN_CHAINS
    assert nat.hooks == GOLDEN_HOOKS
    assert nat.ipsets == {IPSET_ALL_POOLS: ("hash:net", frozenset({"10.65.0.0/16", "10.70.0.0/16"})),
                          IPSET_MASQ_POOLS: ("hash:net", frozenset({"10.65.0.0/16"}))}


def test_no_natoutgoing_pool_renders_nothing() -> None:
    nat = render_nat_outgoing((), ("10.65.0.0/16",))
    assert (nat.chains, nat.hooks, nat.ipsets) == ({}, {}, {})


def test_members_are_rendered_from_parsed_networks() -> None:
    # A host route spelled without /32 (ipset's spelling), a /0 as its two halves (hash:net refuses /0).
    nat = render_nat_outgoing(("10.1.2.3/32",), ("0.0.0.0/0",))
    assert nat.ipsets[IPSET_MASQ_POOLS][1] == frozenset({"10.1.2.3"})
    assert nat.ipsets[IPSET_ALL_POOLS][1] == frozenset({"0.0.0.0/1", "128.0.0.0/1", "10.1.2.3"})
    with pytest.raises(ValueError):
        render_nat_outgoing(("fd00::/64",), ("fd00::/64",))
    with pytest.raises(ValueError):
        render_nat_outgoing(("10.0.0.0/8 -j ACCEPT",), ())


def test_with_nat_always_carries_the_nat_table_so_stale_chains_are_removed() -> None:
    base = compile_policy([], [], [], [])
    off = with_nat(base, render_nat_outgoing((), ()))
    assert off.chains["nat"] == {} and off.hooks["nat"] == {}
    assert off.chains["filter"] == base.chains["filter"] and off.ipsets == base.ipsets
    on = with_nat(base, render_nat_outgoing(("10.65.0.0/16",), ("10.65.0.0/16", "10.70.0.0/16")))
    # a program freezes its rule lists into tuples
    assert on.chains["nat"] == _tuples(GOLDEN_CHAINS) and on.hooks["nat"] == _tuples(GOLDEN_HOOKS)
    assert set(on.ipsets) == set(base.ipsets) | {IPSET_ALL_POOLS, IPSET_MASQ_POOLS}
    assert "nat" not in base.chains  # the compiler's own program is not modified
    clash = PolicyProgram(ipsets={IPSET_ALL_POOLS: ("hash:net", frozenset())})
    with pytest.raises(ValueError, match="both"):
        with_nat(clash, render_nat_outgoing(("10.65.0.0/16",), ("10.65.0.0/16",)))


def _desired_nat(*updates: Upd) -> NatOutgoing:
    model = Model(KEYS)
    model.apply(updates)
    return compute(model, "n1", {}, {}).nat


def test_calculation_lists_masq_pools_and_every_ipv4_pool() -> None:
    nat = _desired_nat(pool("b", "10.70.0.0/16", disabled=True), pool("a", "10.65.0.0/16", natOutgoing=True),
                       pool("c", "fd00:1::/48"))
    # Disabled pools still count as inside (their pods keep running); IPv6 pools are not in the IPv4 sets.
    assert nat == NatOutgoing(masq_pools=("10.65.0.0/16",), all_pools=("10.65.0.0/16", "10.70.0.0/16"))


def test_calculation_without_natoutgoing_is_empty() -> None:
    assert _desired_nat(pool("a", "10.65.0.0/16", natOutgoing=False), pool("b", "10.70.0.0/16")) == NatOutgoing()
    assert _desired_nat() == NatOutgoing()


def test_turning_the_flag_off_or_deleting_the_pool_empties_the_nat_state() -> None:
    model = Model(KEYS)
    model.apply([pool("a", "10.65.0.0/16", natOutgoing=True)])
    assert compute(model, "n1", {}, {}).nat.masq_pools == ("10.65.0.0/16",)
    model.apply([pool("a", "10.65.0.0/16", natOutgoing=False)])
    assert compute(model, "n1", {}, {}).nat == NatOutgoing()
    model.apply([pool("a", "10.65.0.0/16", natOutgoing=True)])
    model.apply([Upd(KEYS.resource("ippools", "a"), None)])
    assert compute(model, "n1", {}, {}).nat == NatOutgoing()


def test_natoutgoing_on_an_ipv6_pool_is_refused_by_validation() -> None:
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "v6"},
           "spec": {"cidr": "fd00:1::/48", "natOutgoing": True}}
    with pytest.raises(ValidationError, match=r"natOutgoing.*l3net does not support"):
        resource_from_document(doc)
    doc["spec"]["natOutgoing"] = False
    assert resource_from_document(doc).spec["natOutgoing"] is False
    assert ipaddress.ip_network(resource_from_document(doc).spec["cidr"]).version == 6


HOSTILE = st.one_of(st.text(max_size=30), st.sampled_from([
    "10.0.0.0/8 -j ACCEPT", "10.0.0.0/8\n-A POSTROUTING -j ACCEPT", '10.0.0.0/8" -j ACCEPT', "0.0.0.0/0",
    "10.1.2.3/32", "fd00::/64", "10.0.0.0/8", "10.0.0.1/8"]))


@given(masq=st.lists(HOSTILE, min_size=1, max_size=3), others=st.lists(HOSTILE, max_size=3))
def test_hostile_pool_text_is_refused_or_rendered_as_parsed_networks_only(masq: list[str], others: list[str]) -> None:
    try:
        nat = render_nat_outgoing(masq, [*masq, *others])
    except ValueError:
        return
    # The rules never carry pool text (members live in the sets), and every member is a re-serialised network.
    assert nat.chains == GOLDEN_CHAINS and nat.hooks == GOLDEN_HOOKS
    for _, members in nat.ipsets.values():
        for m in members:
            assert str(ipaddress.ip_network(m)) in (m, f"{m}/32") and "\n" not in m and " " not in m
