"""felix.desired.DesiredState is a value: a real compiled PolicyProgram and NodeBGPView inside it still hash."""

from __future__ import annotations

import dataclasses

import pytest

from bgp.view import build_node_view
from felix.desired import DesiredState, RouteSpec
from l3net.model import Resource
from policy.compiler import PolicyCompiler, PolicyProgram, compile_policy
from tests.builders import netpol, ns, wep

pytestmark = pytest.mark.unit

NODES = [Resource("Node", "n1", {"bgp": {"ipv4Address": "10.0.0.1/24"}}),
         Resource("Node", "n2", {"bgp": {"ipv4Address": "10.0.0.2/24"}})]
PEER = Resource("BGPPeer", "tor", {"peerIP": "10.0.0.254", "asNumber": 65001})


def _program() -> PolicyProgram:
    a, b = wep("a", "prod", "n2", "10.65.0.2", {"app": "web"}), wep("b", "prod", "n2", "10.65.0.3", {"app": "db"})
    pol = netpol("db", "prod", {"podSelector": {"matchLabels": {"app": "db"}},
                                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]})
    return compile_policy([a, b], [a, b], [pol], [ns("prod")], compiler=PolicyCompiler())


def _state() -> DesiredState:
    return DesiredState(routes=frozenset({RouteSpec("10.65.0.2/32", "workload", "cali1")}),
                        policy=_program(), bgp_view=build_node_view("n2", NODES, [], [PEER]))


def test_state_with_real_program_and_view_hashes_and_equal_inputs_give_equal_states() -> None:
    one, two = _state(), _state()
    assert one.policy is not None and one.policy.rule_count > 0 and one.policy.ipsets
    assert one.bgp_view is not None and one.bgp_view.peers
    assert one == two and hash(one) == hash(two)
    assert {one, two} == {one}
    changed = dataclasses.replace(one, bgp_view=build_node_view("n2", NODES, [], []))
    assert changed != one


def test_program_refuses_mutation_and_freezes_plain_inputs() -> None:
    prog = PolicyProgram(chains={"filter": {"l3n-x": ["-j DROP"]}}, ipsets={"l3n-s": ("hash:net", {"10.0.0.0/8"})})
    assert prog.chains["filter"]["l3n-x"] == ("-j DROP",) and prog.ipsets["l3n-s"][1] == frozenset({"10.0.0.0/8"})
    assert hash(prog) == hash(PolicyProgram(chains={"filter": {"l3n-x": ("-j DROP",)}},
                                            ipsets={"l3n-s": ("hash:net", frozenset({"10.0.0.0/8"}))}))
    with pytest.raises(TypeError):
        prog.chains["filter"]["l3n-y"] = ("-j ACCEPT",)  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        prog.policies = 3  # type: ignore[misc]


def test_compile_policy_without_a_compiler_is_cold_every_time() -> None:
    # No process-wide compiler: a call without one shares no caches with an earlier call.
    assert _cold().policies_recompiled == 1
    assert _cold().policies_recompiled == 1


def _cold() -> PolicyProgram:
    a = wep("a", "prod", "n2", "10.65.0.2", {"app": "db"})
    pol = netpol("db", "prod", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{}]})
    return compile_policy([a], [a], [pol], [ns("prod")])


def test_a_copied_program_shares_its_frozen_tables_and_still_equals_and_hashes() -> None:
    # The agent copies every program (its applied objects set by felix.quarantine): the copy must not re-freeze
    # hundreds of chains rule by rule, and must still be the same value.
    prog = _program()
    copy = dataclasses.replace(prog, applied_objects={"NetworkPolicy/prod/db": None})
    assert copy.chains is prog.chains and copy.hooks is prog.hooks and copy.ipsets is prog.ipsets
    assert copy == prog and hash(copy) == hash(prog)
    assert copy.applied_objects == {"NetworkPolicy/prod/db": None}
    with pytest.raises(TypeError):
        copy.applied_objects["x"] = None  # type: ignore[index]
