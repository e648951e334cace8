"""NetworkSet and GlobalNetworkSet in policy: the compiled program (run in policy.simulator) agrees with the
reference evaluator, sets are selected only where Calico selects them, and a change of nets moves set members only."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l3net.model import Resource
from policy.compiler import PolicyCompiler, compile_policy
from policy.evaluator import Packet, is_allowed
from policy.simulator import Cluster
from tests.builders import gnp, netpol, netset, ns, wep
from tests.unit.policy_strategies import NODES, calico_rules, clusters, label_dicts, peers

pytestmark = pytest.mark.unit

SET_NETS = ["192.168.7.0/24", "10.0.9.0/24", "10.0.2.192/26", "10.0.1.0/24", "0.0.0.0/0", "fd00::/64",
            "192.168.7.7/32"]
SELECTORS = [None, "all()", "app == 'web'", "has(role)", "role != 'db'", "!has(app) || role == 'web'",
             "projectcalico.org/namespace == 'a'"]
NS_SELECTORS = [None, "all()", "team == 'x'", "global()", "global() || team == 'y'", "!global()",
                "kubernetes.io/metadata.name == 'b'"]
OUTSIDE = ["10.0.9.9", "192.168.7.7", "10.0.2.200", "172.16.0.1"]


@st.composite
def network_sets(draw) -> list[Resource]:
    out = []
    for i in range(draw(st.integers(0, 3))):
        nets = draw(st.lists(st.sampled_from(SET_NETS), min_size=0, max_size=2, unique=True))
        out.append(netset(f"s{i}", nets, draw(label_dicts()), draw(st.sampled_from([None, "a", "b"]))))
    return out


@st.composite
def set_gnps(draw) -> Resource:
    """GlobalNetworkPolicies whose rules select by labels, with namespace selectors that include global()."""
    spec: dict = {}
    for key, values in (("selector", SELECTORS), ("namespaceSelector", NS_SELECTORS)):
        v = draw(st.sampled_from(values))
        if v is not None:
            spec[key] = v
    if draw(st.booleans()):
        spec["order"] = draw(st.sampled_from([10, 100]))
    spec["types"] = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    for key in ("ingress", "egress"):
        rules = []
        for rule in draw(st.lists(calico_rules(), max_size=3)):
            for side in ("source", "destination"):
                if draw(st.integers(0, 1)) == 0:
                    entity = dict(rule.get(side) or {})
                    for field, values in (("selector", SELECTORS[1:]), ("namespaceSelector", NS_SELECTORS[1:]),
                                          ("notSelector", SELECTORS[1:])):
                        if draw(st.integers(0, 2)) == 0:
                            entity[field] = draw(st.sampled_from(values))
                    rule[side] = entity
            rules.append(rule)
        spec[key] = rules
    return gnp(f"g{draw(st.integers(0, 99))}", spec)


def simulate(workloads: list[Resource], sets: list[Resource], namespaces: list[Resource],
             pols: list[Resource]) -> Cluster:
    programs = {node: compile_policy([w for w in workloads if w.spec["node"] == node], [*workloads, *sets], pols,
                                     namespaces, compiler=PolicyCompiler()) for node in NODES}
    return Cluster(programs, workloads)


def packets(data: st.DataObject, workloads: list[Resource]) -> list[Packet]:
    addrs = [w.spec["ipNetworks"][0].split("/")[0] for w in workloads] + OUTSIDE
    out = []
    for _ in range(8):
        src = data.draw(st.sampled_from(addrs))
        dst = data.draw(st.sampled_from([a for a in addrs if a != src]))
        proto = data.draw(st.sampled_from(["TCP", "UDP", "ICMP"]))
        if proto == "ICMP":
            out.append(Packet(src, dst, proto, icmp_type=data.draw(st.sampled_from([0, 8])), icmp_code=0))
        else:
            out.append(Packet(src, dst, proto, data.draw(st.sampled_from([53, 80, 8080])),
                              src_port=data.draw(st.sampled_from([53, 40000]))))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), network_sets(), st.lists(set_gnps(), min_size=1, max_size=3, unique_by=lambda p: p.name),
       st.data())
def test_compiled_network_sets_agree_with_evaluator(cluster, sets, globals_, data) -> None:
    workloads, namespaces, pols = cluster
    pols = [*pols, *globals_]
    sim = simulate(workloads, sets, namespaces, pols)
    for pkt in packets(data, workloads):
        expected = is_allowed(pols, namespaces, [*workloads, *sets], pkt)
        assert sim.send(pkt) is expected, pkt
        assert sim.reply_allowed(pkt) is expected, pkt


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), network_sets(), st.data())
def test_kubernetes_peers_never_select_network_sets(cluster, sets, data) -> None:
    """Kubernetes NetworkPolicy: a cluster with network sets decides exactly as one without them."""
    workloads, namespaces, pols = cluster
    # One policy that isolates every pod's egress to selected peers, so that a set a peer selector
    # wrongly matched would open a way out.
    pols = [*pols, netpol("egress-to-peers", data.draw(st.sampled_from(["a", "b"])), {
        "podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": data.draw(st.lists(peers(), min_size=1,
                                                                                             max_size=2))}]})]
    with_sets, without = simulate(workloads, sets, namespaces, pols), simulate(workloads, [], namespaces, pols)
    for pkt in packets(data, workloads):
        expected = is_allowed(pols, namespaces, workloads, pkt)
        assert is_allowed(pols, namespaces, [*workloads, *sets], pkt) is expected, pkt
        assert with_sets.send(pkt) is expected and without.send(pkt) is expected, pkt


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(clusters(), network_sets(), st.lists(set_gnps(), max_size=2, unique_by=lambda p: p.name)),
                min_size=2, max_size=5))
def test_incremental_compiler_with_sets_equals_fresh_compile(steps) -> None:
    warm = PolicyCompiler()
    for (workloads, namespaces, pols), sets, globals_ in [*steps, *reversed(steps)]:
        local = [w for w in workloads if w.spec["node"] == "n1"]
        everything = [*pols, *globals_]
        assert warm.compile(local, [*workloads, *sets], everything, namespaces) == \
            PolicyCompiler().compile(local, [*workloads, *sets], everything, namespaces)


# -- examples ---------------------------------------------------------------------------------------------------
POD = wep("client", "a", "n1", "10.0.1.2", {"app": "client"})
EGRESS_TO_EXTERNAL = gnp("egress-external", {"selector": "app == 'client'", "types": ["Egress"], "egress": [
    {"action": "Allow", "destination": {"selector": "role == 'external'"}}]})
NAMESPACES = [ns("a", {"team": "x"}), ns("b")]


def _allowed(sets: list[Resource], pols: list[Resource], dst: str) -> bool:
    pkt = Packet("10.0.1.2", dst, "TCP", 80, src_port=40000)
    expected = is_allowed(pols, NAMESPACES, [POD, *sets], pkt)
    assert simulate([POD], sets, NAMESPACES, pols).send(pkt) is expected
    return expected


def test_a_global_set_opens_egress_to_its_nets_only() -> None:
    ext = netset("ext", ["192.0.2.0/24", "2001:db8::/64"], {"role": "external"})
    assert _allowed([ext], [EGRESS_TO_EXTERNAL], "192.0.2.10")
    assert not _allowed([ext], [EGRESS_TO_EXTERNAL], "198.51.100.1")
    assert not _allowed([], [EGRESS_TO_EXTERNAL], "192.0.2.10")
    assert not _allowed([netset("ext", ["192.0.2.0/24"], {"role": "other"})], [EGRESS_TO_EXTERNAL], "192.0.2.10")


@pytest.mark.parametrize(("ns_selector", "set_namespace", "allowed"), [
    ("global()", None, True),          # global() selects the non-namespaced sets
    ("global()", "a", False),          # ... and no namespaced one
    ("team == 'x'", "a", True),        # a NetworkSet in a selected namespace
    ("team == 'x'", "b", False),
    ("team == 'x'", None, False),      # a GlobalNetworkSet has no namespace to match
    (None, "b", True),                 # no namespaceSelector: every namespace, and global sets
    (None, None, True),
])
def test_namespace_selector_scopes_sets_as_calico_does(ns_selector, set_namespace, allowed) -> None:
    dest: dict = {"selector": "role == 'external'"}
    if ns_selector is not None:
        dest["namespaceSelector"] = ns_selector
    pol = gnp("p", {"selector": "all()", "types": ["Egress"], "egress": [{"action": "Allow", "destination": dest}]})
    sets = [netset("ext", ["192.0.2.0/24"], {"role": "external"}, set_namespace)]
    assert _allowed(sets, [pol], "192.0.2.10") is allowed


def test_a_policy_namespace_selector_global_applies_to_no_workload() -> None:
    deny = gnp("deny-global", {"namespaceSelector": "global()", "types": ["Egress"], "egress": [{"action": "Deny"}]})
    assert _allowed([], [deny], "192.0.2.10")  # the pod is namespaced: not selected, so not denied


def test_a_kubernetes_peer_does_not_select_a_network_set() -> None:
    np = netpol("to-anything-in-a", "a", {"podSelector": {}, "policyTypes": ["Egress"],
                                            "egress": [{"to": [{"podSelector": {}}]}]})
    assert not _allowed([netset("ext", ["192.0.2.0/24"], {}, "a")], [np], "192.0.2.10")


def test_changing_only_nets_moves_set_members_and_recompiles_nothing() -> None:
    compiler = PolicyCompiler()
    before = compiler.compile([POD], [POD, netset("ext", ["192.0.2.0/24"], {"role": "external"})],
                              [EGRESS_TO_EXTERNAL], NAMESPACES)
    after = compiler.compile([POD], [POD, netset("ext", ["192.0.2.0/25", "198.51.100.0/24"], {"role": "external"})],
                             [EGRESS_TO_EXTERNAL], NAMESPACES)
    assert after.policies_recompiled == 0
    assert after.chains == before.chains
    changed = {n for n in after.ipsets if after.ipsets[n] != before.ipsets.get(n)}
    assert len(changed) == 1
    (name,) = changed
    assert name.startswith("l3ns:")
    assert after.ipsets[name] == ("hash:net", frozenset({"192.0.2.0/25", "198.51.100.0/24"}))
    assert before.ipsets[name] == ("hash:net", frozenset({"192.0.2.0/24"}))
    fresh = PolicyCompiler().compile([POD], [POD, netset("ext", ["192.0.2.0/25", "198.51.100.0/24"],
                                                         {"role": "external"})], [EGRESS_TO_EXTERNAL], NAMESPACES)
    assert after == fresh


def test_ipv6_nets_are_left_out_of_the_sets() -> None:
    prog = PolicyCompiler().compile([POD], [POD, netset("ext", ["2001:db8::/64"], {"role": "external"})],
                                    [EGRESS_TO_EXTERNAL], NAMESPACES)
    assert [m for n, (_, m) in prog.ipsets.items() if n.startswith("l3ns:")] == [frozenset()]
